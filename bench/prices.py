"""Public on-demand prices the cost model uses: AWS us-east-1, list prices (no free tier, no
savings plans), as published on the services' pricing pages; prices as of 2025-06 (DynamoDB's
on-demand prices are those after the 2024-11-01 cut). Update them here; nothing else holds a price.

Sources: https://aws.amazon.com/lambda/pricing/ , https://aws.amazon.com/dynamodb/pricing/on-demand/ ,
https://aws.amazon.com/s3/pricing/ , https://aws.amazon.com/eventbridge/pricing/ ,
https://aws.amazon.com/sqs/pricing/ , https://aws.amazon.com/kms/pricing/ ,
https://aws.amazon.com/secrets-manager/pricing/ , https://aws.amazon.com/step-functions/pricing/
"""

from __future__ import annotations

REGION = "us-east-1"
AS_OF = "2025-06"

# Lambda, arm64 (Graviton), first pricing tier
LAMBDA_ARM64_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1_000_000

# DynamoDB on-demand, Standard table class: per request unit
# (a write unit: one write of up to 1 KB, two for a transactional write;
#  a read unit: one strongly consistent read of up to 4 KB, or two eventually consistent ones;
#  two for a transactional read)
DYNAMODB_WRITE_UNIT = 0.625 / 1_000_000
DYNAMODB_READ_UNIT = 0.125 / 1_000_000

# S3 Standard requests
S3_PUT = 0.005 / 1_000  # PUT, COPY, POST, LIST
S3_GET = 0.0004 / 1_000  # GET, SELECT and all other requests

# EventBridge custom events (each 64 KB chunk of an entry is one event)
EVENTBRIDGE_EVENT = 1.00 / 1_000_000

# SQS requests (each 64 KB chunk of a request is one request)
SQS_FIFO_REQUEST = 0.50 / 1_000_000
SQS_STANDARD_REQUEST = 0.40 / 1_000_000

# KMS and Secrets Manager API requests; Step Functions Standard state transitions
KMS_REQUEST = 0.03 / 10_000
SECRETS_MANAGER_REQUEST = 0.05 / 10_000
STEP_FUNCTIONS_TRANSITION = 0.025 / 1_000

# The model's latency per AWS request inside a Lambda in the same region (an assumption, not
# a price: it turns request counts into Lambda seconds; moto's seconds do not carry over)
ASSUMED_MS_PER_REQUEST = {
    "dynamodb": 6.0,
    "s3": 25.0,
    "events": 20.0,
    "sqs": 10.0,
    "kms": 8.0,
    "secretsmanager": 15.0,
    "stepfunctions": 20.0,
}
ASSUMED_MS_OTHER = 10.0
