"""Parity: every function, route, queue, schedule and table in template.yaml is live locally."""

from __future__ import annotations

import json
import re

import boto3

from local.cfn import load_template
from local.stack import TEMPLATE, LocalStack
from tests.conftest import Api

TEMPLATE_DOC = load_template(TEMPLATE)
RESOURCES = TEMPLATE_DOC["Resources"]


def _of_type(kind: str) -> dict[str, dict]:
    return {k: v for k, v in RESOURCES.items() if v["Type"] == kind}


def _events(kind: str) -> list[tuple[str, str, dict]]:
    found = []
    for logical_id, function in _of_type("AWS::Serverless::Function").items():
        for name, event in function["Properties"].get("Events", {}).items():
            if event["Type"] == kind:
                found.append((logical_id, name, event["Properties"]))
    return found


def test_every_function_is_registered_and_its_handler_loads(stack: LocalStack) -> None:
    assert set(stack.functions) == set(_of_type("AWS::Serverless::Function"))
    lambda_client = boto3.client("lambda")
    for runtime in stack.functions.values():
        assert callable(runtime.load()), runtime.logical_id
        assert (
            lambda_client.get_function(FunctionName=runtime.name)["Configuration"]["FunctionName"]
            == runtime.name
        )


def test_every_route_reaches_its_function(stack: LocalStack, api: Api) -> None:
    token = api.token("t-parity", "u1", "admin")
    routes = _events("HttpApi")
    assert routes, "the template has routes"
    for logical_id, _name, props in routes:
        path = re.sub(r"\{[^}]+\}", "x1", props["Path"]).replace(
            "/v1/directory/x1/", "/v1/directory/contacts/"
        )
        runtime = stack.functions[logical_id]
        before = runtime.invocations
        body = (
            json.dumps({"name": "Parity", "emails": []})
            if props["Method"].upper() in ("PUT", "POST")
            else None
        )
        response = api.call(
            props["Method"].upper(),
            path,
            token,
            data=body,
            headers={"content-type": "application/json"},
            allow_redirects=False,
        )
        if props.get("Auth", {}).get("Authorizer") != "NONE":  # past the authorizer with a valid token
            assert response.status_code != 401, (props, response.text)
        assert runtime.invocations == before + 1, (
            f"{props['Method']} {props['Path']} did not reach {logical_id}"
        )
        assert response.text != '{"message": "Not Found"}', props


def test_every_queue_exists_with_its_dead_letter_queue_and_is_polled(stack: LocalStack) -> None:
    sqs = boto3.client("sqs")
    queues = _of_type("AWS::SQS::Queue")
    assert set(stack.queues) == set(queues)
    for logical_id, queue in queues.items():
        attributes = sqs.get_queue_attributes(QueueUrl=stack.queues[logical_id], AttributeNames=["All"])[
            "Attributes"
        ]
        assert attributes.get("FifoQueue") == str(
            queue["Properties"].get("FifoQueue", False)
        ).lower() or not queue["Properties"].get("FifoQueue")
        if "RedrivePolicy" in queue["Properties"]:
            redrive = json.loads(attributes["RedrivePolicy"])
            dlq_logical = queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert redrive["deadLetterTargetArn"].endswith(stack.queues[dlq_logical].rsplit("/", 1)[1])
    polled = {s.queue_url for s in stack.sqs_sources}
    for logical_id, _name, props in _events("SQS"):
        queue_logical = props["Queue"]["Fn::GetAtt"][0]
        assert stack.queues[queue_logical] in polled, f"{logical_id} is not polled from {queue_logical}"
    alive = {t.name for t in stack._threads if t.is_alive()}
    assert {f"sqs:{s.function.logical_id}" for s in stack.sqs_sources} <= alive


def test_every_schedule_has_its_rule_and_fires_its_function(stack: LocalStack) -> None:
    events = boto3.client("events")
    scheduled = _events("Schedule") + _events("ScheduleV2")
    assert len(stack.schedules) == len(scheduled)
    for source in stack.schedules:
        rule = events.describe_rule(Name=source.rule_arn.rsplit("/", 1)[1])
        assert rule["ScheduleExpression"].startswith("rate(")
        before = source.function.invocations
        stack.fire_schedule(source)
        assert source.function.invocations == before + 1


def test_every_table_matches_the_template(stack: LocalStack) -> None:
    ddb = boto3.client("dynamodb")
    tables = _of_type("AWS::DynamoDB::Table")
    assert set(stack.tables) == set(tables)
    for logical_id, table in tables.items():
        described = ddb.describe_table(TableName=stack.tables[logical_id])["Table"]
        props = table["Properties"]
        assert described["KeySchema"] == props["KeySchema"]
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        wanted = {i["IndexName"]: i["KeySchema"] for i in props.get("GlobalSecondaryIndexes", [])}
        assert {i["IndexName"]: i["KeySchema"] for i in described.get("GlobalSecondaryIndexes", [])} == wanted
        backups = ddb.describe_continuous_backups(TableName=stack.tables[logical_id])[
            "ContinuousBackupsDescription"
        ]
        assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_state_machines_bus_and_bucket_exist(stack: LocalStack) -> None:
    assert set(stack.state_machines) == set(_of_type("AWS::Serverless::StateMachine"))
    sfn = boto3.client("stepfunctions")
    for arn in stack.state_machines.values():
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
        assert "${" not in json.dumps(definition), "DefinitionSubstitutions were applied"
    assert set(stack.buses) == set(_of_type("AWS::Events::EventBus"))
    s3 = boto3.client("s3")
    for bucket in stack.buckets.values():
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert any(r["Filter"]["Prefix"] == "staging/" and r["Expiration"]["Days"] == 1 for r in rules)
        assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
