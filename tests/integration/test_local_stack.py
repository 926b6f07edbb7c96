"""The local stack wires whatever the template declares: a new route, queue, schedule or S3
notification is live with no change to local/. Checked on a template written here."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest
from werkzeug.test import Client

from local.devissuer import DevIssuer
from local.http import LocalHttpApi
from local.stack import LocalStack
from tests.integration.helpers import wait_until

HANDLER = """
import json, os
SEEN = []

def handler(event, context):
    SEEN.append(event)
    if "Records" in event and event["Records"][0].get("eventSource") == "aws:sqs":
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "fail"]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}
    if event.get("version") == "2.0":
        return {"statusCode": 201, "headers": {"x-echo": event["pathParameters"]["name"]},
                "body": json.dumps({"route": event["routeKey"], "claims": event["requestContext"].get("authorizer"),
                                    "query": event.get("queryStringParameters"), "var": os.environ["ECHO_VAR"]})}
    return {"ok": True}
"""

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  JwtIssuer: {Type: String}
  JwtAudience: {Type: String}
  Stage: {Type: String, Default: x}
Globals:
  Function:
    Runtime: python3.13
    Handler: app.handler
    Environment:
      Variables:
        ECHO_VAR: !Sub "echo-${Stage}"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            JwtConfiguration: {issuer: !Ref JwtIssuer, audience: [!Ref JwtAudience]}
      CorsConfiguration:
        AllowOrigins: ["https://crm.example"]
        AllowMethods: [GET, POST]
        AllowHeaders: [authorization]
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "echo-${Stage}-jobs"
      VisibilityTimeout: 1
      RedrivePolicy: {deadLetterTargetArn: !GetAtt JobsDlq.Arn, maxReceiveCount: 2}
  JobsDlq:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "echo-${Stage}-dlq"
  Uploads:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "echo-${Stage}-uploads"
  Echo:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "echo-${Stage}"
      CodeUri: echo/
      Events:
        Public:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: GET, Path: "/open/{name}", Auth: {Authorizer: NONE}}
        Private:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: POST, Path: "/v1/echo/{name}"}
        Work:
          Type: SQS
          Properties: {Queue: !GetAtt Jobs.Arn, BatchSize: 5, FunctionResponseTypes: [ReportBatchItemFailures]}
        Tick:
          Type: Schedule
          Properties: {Schedule: rate(1 minute)}
        Upload:
          Type: S3
          Properties: {Bucket: !Ref Uploads, Events: "s3:ObjectCreated:*"}
"""


@pytest.fixture(scope="module")
def echo_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("echo")
    (root / "echo").mkdir()
    (root / "echo" / "app.py").write_text(textwrap.dedent(HANDLER))
    (root / "template.yaml").write_text(TEMPLATE)
    issuer = DevIssuer(issuer="https://issuer.test", audience="echo", key_dir=root / "keys")
    with LocalStack(
        root / "template.yaml", issuer=issuer, parameters={"Stage": "e2e"}, run_schedules=False
    ) as stack:
        yield stack


def _seen(stack: LocalStack) -> list[dict]:
    return stack.functions["Echo"].module.SEEN  # type: ignore[no-any-return]


def test_routes_from_the_template_are_served_with_auth_and_cors(echo_stack: LocalStack) -> None:
    client = Client(LocalHttpApi(echo_stack))
    public = client.get("/open/ann?x=1&x=2", headers={"Origin": "https://crm.example"})
    assert public.status_code == 201
    body = json.loads(public.get_data())
    assert body == {"route": "GET /open/{name}", "claims": None, "query": {"x": "1,2"}, "var": "echo-e2e"}
    assert public.headers["x-echo"] == "ann"
    assert public.headers["Access-Control-Allow-Origin"] == "https://crm.example"

    assert client.post("/v1/echo/bob").status_code == 401
    token = echo_stack.issuer.mint("t1", "u1", "admin")
    private = client.post("/v1/echo/bob", headers={"Authorization": f"Bearer {token}"})
    assert private.status_code == 201, private.get_data()
    claims = json.loads(private.get_data())["claims"]["jwt"]["claims"]
    assert (claims["sub"], claims["tenant_id"], claims["aud"]) == ("u1", "t1", "echo")
    assert client.get("/nowhere").status_code == 404

    preflight = client.options(
        "/v1/echo/bob", headers={"Origin": "https://crm.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204 and "POST" in preflight.headers["Access-Control-Allow-Methods"]
    stranger = client.options(
        "/v1/echo/bob", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in stranger.headers


def test_queue_messages_reach_the_function_and_failures_are_redriven(echo_stack: LocalStack) -> None:
    sqs = boto3.client("sqs")
    url = echo_stack.queues["Jobs"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    sqs.send_message(QueueUrl=url, MessageBody="fail")
    wait_until(
        lambda: any(r["body"] == "hello" for e in _seen(echo_stack) if "Records" in e for r in e["Records"])
    )
    record = next(
        r for e in _seen(echo_stack) if "Records" in e for r in e["Records"] if r["body"] == "hello"
    )
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(":echo-e2e-jobs")

    def failed_one_dead_lettered() -> bool:
        messages = sqs.receive_message(QueueUrl=echo_stack.queues["JobsDlq"]).get("Messages", [])
        return any(m["Body"] == "fail" for m in messages)

    assert wait_until(failed_one_dead_lettered, timeout=20)


def test_schedules_and_s3_notifications_reach_the_function(echo_stack: LocalStack) -> None:
    (tick,) = echo_stack.schedules
    assert tick.every_s == 60
    echo_stack.fire_schedule(tick)
    assert _seen(echo_stack)[-1]["detail-type"] == "Scheduled Event"

    boto3.client("s3").put_object(Bucket="echo-e2e-uploads", Key="staging/a.txt", Body=b"x")
    uploaded = wait_until(
        lambda: [e for e in _seen(echo_stack) if e.get("Records", [{}])[0].get("eventSource") == "aws:s3"]
    )
    # S3 event keys are URL-encoded; consumers decode them
    assert unquote_plus(uploaded[0]["Records"][0]["s3"]["object"]["key"]) == "staging/a.txt"


def test_unknown_resource_types_and_schedules_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(
        "Resources:\n  Q:\n    Type: AWS::Kinesis::Stream\n    Properties: {ShardCount: 1}\n"
    )
    with pytest.raises(NotImplementedError, match="AWS::Kinesis::Stream"):
        LocalStack(tmp_path / "template.yaml", issuer=DevIssuer(key_dir=tmp_path)).start().stop()
