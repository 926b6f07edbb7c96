"""Adapters to AWS. The only modules that talk to boto3."""
