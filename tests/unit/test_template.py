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
