"""The template keeps the operational standards: logs, least privilege, DLQs with alarms, data at rest."""

from __future__ import annotations

import json

from local.cfn import load_template
from local.stack import TEMPLATE

DOC = load_template(TEMPLATE)
RESOURCES = DOC["Resources"]


def _of_type(kind: str) -> dict[str, dict]:
    return {k: v for k, v in RESOURCES.items() if v["Type"] == kind}


def test_globals_runtime_architecture_tracing_and_layer() -> None:
    function_globals = DOC["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Tracing"] == "Active"
    assert function_globals["Layers"] == [{"Ref": "SharedLayer"}]
    env = function_globals["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] and env["POWERTOOLS_METRICS_NAMESPACE"]
    layer = RESOURCES["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "shared/"
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    makefile = (TEMPLATE.parent / "shared" / "Makefile").read_text()
    assert "build-SharedLayer:" in makefile and "--python-version 3.13" in makefile and "aarch64" in makefile


def test_every_function_logs_to_its_own_group_with_retention() -> None:
    groups = _of_type("AWS::Logs::LogGroup")
    used = set()
    for logical_id, function in _of_type("AWS::Serverless::Function").items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert group in groups, logical_id
        assert "RetentionInDays" in groups[group]["Properties"]
        assert group not in used, f"{logical_id} shares a log group"
        used.add(group)


def test_no_wildcard_resources_but_log_delivery() -> None:
    # CloudWatch Logs delivery for Step Functions only accepts "*" (AWS documents no narrower resource).
    allowed = {
        f"logs:{action}"
        for action in [
            "CreateLogDelivery",
            "GetLogDelivery",
            "UpdateLogDelivery",
            "DeleteLogDelivery",
            "ListLogDeliveries",
            "PutResourcePolicy",
            "DescribeResourcePolicies",
            "DescribeLogGroups",
        ]
    }
    for logical_id, resource in RESOURCES.items():
        for policy in resource.get("Properties", {}).get("Policies", []) or []:
            if isinstance(policy, dict) and "Statement" in policy:
                for statement in policy["Statement"]:
                    if statement.get("Resource") == "*":
                        assert set(statement["Action"]) <= allowed, logical_id


def test_every_redriven_queue_has_a_dlq_with_an_alarm() -> None:
    queues = _of_type("AWS::SQS::Queue")
    alarms = _of_type("AWS::CloudWatch::Alarm")
    watched = {
        dimension["Value"]["Fn::GetAtt"][0]
        for alarm in alarms.values()
        for dimension in alarm["Properties"]["Dimensions"]
        if dimension["Name"] == "QueueName"
    }
    dlqs = set()
    for logical_id, queue in queues.items():
        if "RedrivePolicy" not in queue["Properties"]:
            continue
        dlq = queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        dlqs.add(dlq)
        assert dlq in watched, f"the DLQ of {logical_id} has no alarm"
    worker_queues = {q for q in queues if q not in dlqs}
    assert worker_queues and all("RedrivePolicy" in queues[q]["Properties"] for q in worker_queues)


def test_tables_are_on_demand_recoverable_and_encrypted() -> None:
    for logical_id, table in _of_type("AWS::DynamoDB::Table").items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical_id
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id
        assert table["DeletionPolicy"] == "Retain", logical_id


def test_bucket_is_private_encrypted_tls_only_and_expires_staging() -> None:
    ((bucket_id, bucket),) = _of_type("AWS::S3::Bucket").items()
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    staging = [r for r in props["LifecycleConfiguration"]["Rules"] if r.get("Prefix") == "staging/"]
    assert staging and staging[0]["ExpirationInDays"] == 1
    policies = [
        p
        for p in _of_type("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    statement = policies[0]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }


def test_api_defaults_to_jwt_with_public_routes_marked() -> None:
    api = RESOURCES["HttpApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "CrmJwt"
    jwt = api["Auth"]["Authorizers"]["CrmJwt"]["JwtConfiguration"]
    assert jwt == {"issuer": {"Ref": "JwtIssuer"}, "audience": [{"Ref": "JwtAudience"}]}
    assert api["CorsConfiguration"]["AllowOrigins"] == {"Ref": "CorsAllowedOrigins"}
    for function in _of_type("AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] != "HttpApi":
                continue
            path = event["Properties"]["Path"]
            public = event["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
            if path.startswith("/v1/"):
                assert not public, path
            else:
                assert public and (path == "/health" or path.split("/")[1] in {"webhooks", "oauth", "t"}), (
                    path
                )


def test_state_machine_definition_is_substituted_from_the_template() -> None:
    machine = RESOURCES["ResyncStateMachine"]["Properties"]
    text = (TEMPLATE.parent / machine["DefinitionUri"]).read_text()
    for key in machine["DefinitionSubstitutions"]:
        assert "${" + key + "}" in text
    json.loads(text)


# ---------------------------------------------------------------- issue 9, item 17


def _statements(function: dict) -> list[dict]:
    return [
        statement
        for policy in function["Properties"].get("Policies", []) or []
        if isinstance(policy, dict) and "Statement" in policy
        for statement in policy["Statement"]
    ]


def _s3_templates(function: dict) -> list[str]:
    return [
        name
        for policy in function["Properties"].get("Policies", []) or []
        if isinstance(policy, dict)
        for name in policy
        if name.startswith("S3")
    ]


def _subbed(resource: object) -> str:
    """A Resource entry as text: `!Sub ${DataBucket.Arn}/staging/*` -> `${DataBucket.Arn}/staging/*`."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        return str(resource["Fn::Sub"])
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return "${" + ".".join(resource["Fn::GetAtt"]) + "}"
    return str(resource)


def test_the_send_function_reads_staging_and_writes_raw_and_nothing_more() -> None:
    """send_mail lists and reads staged files, signs presigned POSTs for staging/ (S3 checks the
    upload against the signer's rights) and writes the raw MIME of what it sent to raw/."""
    send = RESOURCES["SendMailFunction"]
    assert _s3_templates(send) == []  # no SAM S3 policy template: those cover the whole bucket
    s3 = [s for s in _statements(send) if any(str(a).startswith("s3:") for a in s["Action"])]
    granted: dict[str, set[str]] = {}
    for statement in s3:
        assert statement["Effect"] == "Allow"
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for resource in resources:
            granted.setdefault(_subbed(resource), set()).update(statement["Action"])
    assert granted == {
        "${DataBucket.Arn}/staging/*": {"s3:GetObject", "s3:PutObject"},
        "${DataBucket.Arn}/raw/*": {"s3:PutObject"},
        "${DataBucket.Arn}": {"s3:ListBucket"},
    }
    (listing,) = [s for s in s3 if "s3:ListBucket" in s["Action"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["staging/*"]}}


def test_raw_mail_expires_after_a_parameter_of_days_old_versions_too() -> None:
    parameter = DOC["Parameters"]["RawMailRetentionDays"]
    assert parameter["Type"] == "Number" and int(parameter["Default"]) >= 1
    assert int(parameter["MinValue"]) >= 1
    ((_, bucket),) = _of_type("AWS::S3::Bucket").items()
    raw = [r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"] if r.get("Prefix") == "raw/"]
    assert len(raw) == 1 and raw[0]["Status"] == "Enabled"
    assert raw[0]["ExpirationInDays"] == {"Ref": "RawMailRetentionDays"}
    assert raw[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1
    assert "RawMailRetentionDays" in (TEMPLATE.parent / "README.md").read_text()


def test_the_sync_queue_and_its_dlq_take_tls_only() -> None:
    covered: set[str] = set()
    for policy in _of_type("AWS::SQS::QueuePolicy").values():
        props = policy["Properties"]
        (statement,) = [s for s in props["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert statement["Principal"] == "*" and statement["Action"] == "sqs:*"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        arns = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        queues = {q["Ref"] for q in props["Queues"]}
        assert {a["Fn::GetAtt"][0] for a in arns} == queues
        covered |= queues
    assert covered == set(_of_type("AWS::SQS::Queue")) == {"SyncQueue", "SyncDeadLetterQueue"}
    assert not _of_type("AWS::SQS::QueueInlinePolicy")  # one policy per queue: no second one to clash


def test_the_functions_that_store_mail_write_raw_and_nothing_else_of_the_bucket() -> None:
    """The sync worker and the resync store the raw MIME of what they ingest under raw/; no
    function gets a SAM S3 policy template, whose rights cover the whole bucket (the write one
    includes s3:PutLifecycleConfiguration: a worker could undo the retention rules)."""
    for logical_id, function in _of_type("AWS::Serverless::Function").items():
        assert _s3_templates(function) == [], logical_id
    for logical_id in ("SyncWorkerFunction", "ResyncFunction"):
        s3 = [
            s
            for s in _statements(RESOURCES[logical_id])
            if any(str(a).startswith("s3:") for a in s["Action"])
        ]
        assert [(s["Effect"], s["Action"], _subbed(s["Resource"])) for s in s3] == [
            ("Allow", ["s3:PutObject"], "${DataBucket.Arn}/raw/*")
        ], logical_id
