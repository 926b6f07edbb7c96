"""The local stack: the whole service on one machine, built from template.yaml.

moto stands in for AWS, in this process. Every resource of the template is created in moto
from its properties; every function's events are wired to its real handler: HTTP API routes
(served by local/http.py), SQS event sources (pollers), schedules (timers), S3 notifications
(moto delivers them) and Step Functions Lambda tasks (moto's interpreter calls Lambda, which
this module dispatches to the handler). Nothing here knows the service's resources by name:
a resource, route, queue or schedule added to the template is live here as it is.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import secrets
import string
import sys
import threading
import time
import traceback
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from local.cfn import PSEUDO_DEFAULTS, Resolver, load_template
from local.devissuer import DevIssuer
from local.moto_patch import moto_event_paths_parsed_once, moto_transactions_without_table_copies

if TYPE_CHECKING:
    from crmsync.services import Services

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
REGION = str(PSEUDO_DEFAULTS["AWS::Region"])
ACCOUNT = str(PSEUDO_DEFAULTS["AWS::AccountId"])

# Resource types that have no behaviour to reproduce locally, with the reason.
NOT_MODELLED = {
    "AWS::S3::BucketPolicy": "IAM-style policies are not enforced by moto",
    "AWS::SQS::QueueInlinePolicy": "IAM-style policies are not enforced by moto",
    "AWS::SQS::QueuePolicy": "IAM-style policies are not enforced by moto",
    "AWS::SNS::Subscription": "no mail leaves this machine",
}

# Creation order: what a resource refers to is created before it.
ORDER = [
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::Logs::LogGroup",
    "AWS::SNS::Topic",
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::Events::EventBus",
    "AWS::Events::Archive",
    "AWS::SecretsManager::Secret",
    "AWS::Serverless::LayerVersion",
    "AWS::Serverless::HttpApi",
    "AWS::S3::Bucket",
    "AWS::Serverless::Function",
    "AWS::Serverless::StateMachine",
    "AWS::CloudWatch::Alarm",
]

LOCAL_ENVIRONMENT: dict[str, str] = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
}


@dataclass
class LocalContext:
    """What Lambda passes as `context`."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class FunctionRuntime:
    """One function of the template, with its real handler loaded from functions/<name>/."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    invocations: int = 0
    module: Any = None
    _entry: Callable[[Any, Any], Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> Callable[[Any, Any], Any]:
        if self._entry is None:
            module_name, _, attribute = self.handler.rpartition(".")
            path = self.code_dir / f"{module_name.replace('.', '/')}.py"
            spec = importlib.util.spec_from_file_location(f"crmsync_function_{self.logical_id}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load handler {self.handler} of {self.logical_id} from {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            self.module = module
            self._entry = getattr(module, attribute)
        return self._entry

    def invoke(self, event: Any) -> Any:
        # One invocation at a time per function, as one Lambda instance would take them.
        with self._lock:
            entry = self.load()
            self.invocations += 1
            context = LocalContext(
                self.name, self.memory, self.arn, self.timeout, log_group_name=f"/aws/lambda/{self.name}"
            )
            return entry(event, context)


@dataclass
class Route:
    method: str
    path: str
    function: FunctionRuntime
    authorizer: dict[str, Any] | None
    pattern: re.Pattern[str] = field(init=False)
    literal_segments: int = field(init=False)

    def __post_init__(self) -> None:
        parts = []
        for segment in self.path.strip("/").split("/"):
            if segment.startswith("{") and segment.endswith("+}"):
                parts.append(f"(?P<{segment[1:-2]}>.+)")
            elif segment.startswith("{") and segment.endswith("}"):
                parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
            else:
                parts.append(re.escape(segment))
        self.pattern = re.compile("^/" + "/".join(parts) + "$")
        self.literal_segments = sum(1 for s in self.path.split("/") if s and not s.startswith("{"))

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class SqsSource:
    queue_url: str
    queue_arn: str
    function: FunctionRuntime
    batch_size: int
    report_failures: bool


@dataclass
class ScheduleSource:
    name: str
    function: FunctionRuntime
    every_s: float
    rule_arn: str
    fired: int = 0


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _aws(service: str) -> Any:
    """A moto-backed client, one per service while a stack runs (the pollers ask ten times a
    second; a client costs milliseconds of CPU to make); untyped because the stack passes
    CloudFormation-shaped values through."""
    with _CLIENTS_LOCK:
        if service not in _CLIENTS:
            _CLIENTS[service] = boto3.client(service)  # type: ignore[call-overload]
        return _CLIENTS[service]


def _rate_seconds(expression: str) -> float:
    match = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        raise NotImplementedError(f"schedule {expression!r}: the local stack runs rate(...) schedules only")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


def _merge_globals(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge, lists concatenate, the resource's scalars win."""
    merged = dict(defaults)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_globals(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _tiny_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


class LocalStack:
    def __init__(
        self,
        template_path: Path = TEMPLATE,
        *,
        issuer: DevIssuer | None = None,
        parameters: dict[str, Any] | None = None,
        say: Callable[[str], None] | None = None,
        run_schedules: bool = True,
        tap_events: bool = True,
    ) -> None:
        self.template_path = template_path
        self.template = load_template(template_path)
        self.issuer = issuer or DevIssuer()
        self.parameters = {
            "Stage": "local",
            "JwtIssuer": self.issuer.issuer,
            "JwtAudience": self.issuer.audience,
            "CorsAllowedOrigins": "http://localhost:5173,http://127.0.0.1:5173",
            "LogRetentionDays": 1,
            **(parameters or {}),
        }
        self.say = say or (lambda _: None)
        self.run_schedules = run_schedules
        self.tap_events = tap_events  # False: no rule copies the bus's events to a local queue
        self.functions: dict[str, FunctionRuntime] = {}
        self.routes: list[Route] = []
        self.sqs_sources: list[SqsSource] = []
        self.schedules: list[ScheduleSource] = []
        self.state_machines: dict[str, str] = {}
        self.tables: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        self.buckets: dict[str, str] = {}
        self.buses: dict[str, str] = {}
        self.http_apis: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self._services: Services | None = None  # the stack's composition root, built on start
        self._services_before: Services | None = None
        self._pending_notifications: list[tuple[FunctionRuntime, dict[str, Any]]] = []
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._events_changed = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mock: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._original_invoke: Any = None
        self._original_stub: Any = None
        self._patches = contextlib.ExitStack()
        self._tap_queue_url = ""
        self.resolver: Resolver

    # ------------------------------------------------------------------ lifecycle
    def _serialize_dynamodb(self) -> None:
        """DynamoDB takes concurrent requests; moto's in-memory tables do not (a query iterating a
        table while another thread writes fails with "dictionary changed size"). The API, the
        pollers and the emulators' notifications all run threads, so moto's DynamoDB requests
        go one at a time here. (Only DynamoDB: it never calls back into another service, so one
        lock cannot deadlock.)"""
        from moto.core.botocore_stubber import BotocoreStubber

        original = BotocoreStubber.__call__
        self._original_stub = original
        lock = threading.RLock()

        def serialized(stub: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
            if ".dynamodb." not in event_name:
                return original(stub, event_name, request, **kwargs)
            with lock:
                return original(stub, event_name, request, **kwargs)

        BotocoreStubber.__call__ = serialized  # type: ignore[method-assign,assignment]

    def start(self) -> LocalStack:
        from moto import mock_aws

        self._set_env(LOCAL_ENVIRONMENT)
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        # moto copies every table for each transaction; the stack's tables grow as it runs
        self._patches.enter_context(moto_transactions_without_table_copies())
        self._patches.enter_context(moto_event_paths_parsed_once())
        self._serialize_dynamodb()
        self._install_lambda_dispatch()
        self.resolver = Resolver(self.template, self.parameters, PSEUDO_DEFAULTS)
        self._plan_names()
        self._create_resources()
        self._set_env(self._function_environment())
        self._bind_services()
        self._install_events_tap()
        self._start_threads()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._original_stub is not None:
            from moto.core.botocore_stubber import BotocoreStubber

            BotocoreStubber.__call__ = self._original_stub  # type: ignore[method-assign]
            self._original_stub = None
        if self._original_invoke is not None:
            from moto.awslambda.models import LambdaFunction

            LambdaFunction._invoke_lambda = self._original_invoke  # type: ignore[method-assign]
        self._patches.close()
        if self._mock is not None:
            self._mock.stop()
        with _CLIENTS_LOCK:
            _CLIENTS.clear()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._unbind_services()

    @property
    def services(self) -> Services:
        """The stack's composition root (the one its handlers use); built when the stack starts."""
        if self._services is None:
            raise RuntimeError("the local stack is not started")
        return self._services

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _bind_services(self) -> None:
        """This stack's composition root, built from the functions' environment; its handlers
        (loaded after this) and its tests share it. AWS clients made for an earlier stack go."""
        from crmsync import services
        from crmsync.stores import aws
        from crmsync.stores import secrets as layer_secrets

        aws.reset()
        layer_secrets.secret_json.cache_clear()
        layer_secrets.secret_text.cache_clear()
        self._services = services.Services()
        self._services_before = services.bind(self._services)

    def _unbind_services(self) -> None:
        from crmsync import services
        from crmsync.stores import aws

        if self._services is not None:
            services.bind(self._services_before)  # a stack started inside another gives it back
            self._services = None
        aws.reset()

    # ------------------------------------------------------------------ resources
    def _resources(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id, resource in self.template["Resources"].items():
            if resource["Type"] == kind and self._condition_holds(resource):
                yield logical_id, resource

    def _condition_holds(self, resource: dict[str, Any]) -> bool:
        condition = resource.get("Condition")
        return condition is None or self.resolver.conditions[condition]

    def _plan_names(self) -> None:
        """Functions and state machines refer to each other: fix their names and ARNs first."""
        r = self.resolver
        for logical_id, resource in self._resources("AWS::Serverless::Function"):
            name = r.resolve(resource.get("Properties", {}).get("FunctionName", logical_id))
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
            r.refs[logical_id] = name
            r.attrs[logical_id] = {"Arn": arn}
        for logical_id, resource in self._resources("AWS::Serverless::StateMachine"):
            name = r.resolve(resource.get("Properties", {}).get("Name", logical_id))
            arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
            r.refs[logical_id] = arn
            r.attrs[logical_id] = {"Arn": arn, "Name": name}

    def _create_resources(self) -> None:
        known = set(ORDER) | set(NOT_MODELLED)
        for logical_id, resource in self.template["Resources"].items():
            if resource["Type"] not in known:
                raise NotImplementedError(
                    f"{logical_id}: resource type {resource['Type']} is not modelled by the local stack "
                    "(add it to local/stack.py)"
                )
        for logical_id, resource in self.template["Resources"].items():
            if resource["Type"] in NOT_MODELLED and self._condition_holds(resource):
                self.skipped[logical_id] = NOT_MODELLED[resource["Type"]]
        iam = _aws("iam")
        try:
            self._role_arn = iam.create_role(
                RoleName="crmsync-local-role",
                AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
            )["Role"]["Arn"]
        except iam.exceptions.EntityAlreadyExistsException:  # a second stack in the same moto
            self._role_arn = iam.get_role(RoleName="crmsync-local-role")["Role"]["Arn"]
        for kind in ORDER:
            resources = list(self._resources(kind))
            if kind == "AWS::SQS::Queue":  # dead-letter queues before the queues that name them
                resources.sort(key=lambda item: "RedrivePolicy" in item[1].get("Properties", {}))
            for logical_id, resource in resources:
                create = getattr(self, "_create_" + kind.split("::", 1)[1].replace("::", "_"))
                create(logical_id, resource)
        self._apply_bucket_notifications()

    def _props(self, resource: dict[str, Any]) -> dict[str, Any]:
        props: dict[str, Any] = self.resolver.resolve(resource.get("Properties", {}))
        return props

    def _create_KMS_Key(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        kms = _aws("kms")
        key = kms.create_key(
            Description=props.get("Description", logical_id), Policy=json.dumps(props["KeyPolicy"])
        )
        key_id = key["KeyMetadata"]["KeyId"]
        if props.get("EnableKeyRotation"):
            kms.enable_key_rotation(KeyId=key_id)
        self.resolver.refs[logical_id] = key_id
        self.resolver.attrs[logical_id] = {"Arn": key["KeyMetadata"]["Arn"], "KeyId": key_id}

    def _create_KMS_Alias(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        _aws("kms").create_alias(AliasName=props["AliasName"], TargetKeyId=props["TargetKeyId"])
        self.resolver.refs[logical_id] = props["AliasName"]

    def _create_Logs_LogGroup(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        logs = _aws("logs")
        name = props.get("LogGroupName", logical_id)
        logs.create_log_group(logGroupName=name)
        if "RetentionInDays" in props:
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
        self.resolver.refs[logical_id] = name
        self.resolver.attrs[logical_id] = {"Arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"}

    def _create_SNS_Topic(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        attributes = {"KmsMasterKeyId": props["KmsMasterKeyId"]} if "KmsMasterKeyId" in props else {}
        arn = _aws("sns").create_topic(Name=props.get("TopicName", logical_id), Attributes=attributes)[
            "TopicArn"
        ]
        self.resolver.refs[logical_id] = arn
        self.resolver.attrs[logical_id] = {"TopicArn": arn, "TopicName": arn.rsplit(":", 1)[1]}

    def _create_DynamoDB_Table(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        ddb = _aws("dynamodb")
        name = props.get("TableName", logical_id)
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for optional in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
            if optional in props:
                request[optional] = props[optional]
        if "SSESpecification" in props:  # CloudFormation says SSEEnabled where the API says Enabled
            sse = dict(props["SSESpecification"])
            sse["Enabled"] = bool(sse.pop("SSEEnabled", False))
            sse.pop("KMSMasterKeyId", None) if not sse.get("KMSMasterKeyId") else None
            request["SSESpecification"] = sse
        if request["BillingMode"] == "PROVISIONED":
            request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        table = ddb.create_table(**request)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
            ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        self.tables[logical_id] = name
        self.resolver.refs[logical_id] = name
        self.resolver.attrs[logical_id] = {
            "Arn": table["TableArn"],
            "StreamArn": table.get("LatestStreamArn", ""),
        }

    def _create_SQS_Queue(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        name = props.get("QueueName", logical_id + (".fifo" if props.get("FifoQueue") else ""))
        attributes: dict[str, str] = {}
        for key in (
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "SqsManagedSseEnabled",
        ):
            if key in props:
                value = props[key]
                attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        sqs = _aws("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queues[logical_id] = url
        self.resolver.refs[logical_id] = url
        self.resolver.attrs[logical_id] = {"Arn": arn, "QueueName": name, "QueueUrl": url}

    def _create_Events_EventBus(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        arn = _aws("events").create_event_bus(Name=props["Name"])["EventBusArn"]
        self.buses[logical_id] = props["Name"]
        self.resolver.refs[logical_id] = props["Name"]
        self.resolver.attrs[logical_id] = {"Arn": arn, "Name": props["Name"]}

    def _create_Events_Archive(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        name = props.get("ArchiveName", logical_id)
        archive = _aws("events").create_archive(
            ArchiveName=name,
            EventSourceArn=props["SourceArn"],
            Description=props.get("Description", ""),
            RetentionDays=int(props.get("RetentionDays", 0)),
        )
        self.resolver.refs[logical_id] = name
        self.resolver.attrs[logical_id] = {"Arn": archive["ArchiveArn"]}

    def _create_SecretsManager_Secret(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        request = {"Name": props.get("Name", logical_id), "Description": props.get("Description", "")}
        if "SecretString" in props:
            request["SecretString"] = props["SecretString"]
        elif "GenerateSecretString" in props:  # what CloudFormation generates, generated here
            spec = props["GenerateSecretString"]
            alphabet = string.ascii_letters + string.digits
            if not spec.get("ExcludePunctuation"):
                alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
            request["SecretString"] = "".join(
                secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32)))
            )
        if "KmsKeyId" in props:
            request["KmsKeyId"] = props["KmsKeyId"]
        arn = _aws("secretsmanager").create_secret(**request)["ARN"]
        self.resolver.refs[logical_id] = arn
        self.resolver.attrs[logical_id] = {"Id": arn}

    def _create_Serverless_LayerVersion(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        content = (self.template_path.parent / props["ContentUri"]).resolve()
        if str(content) not in sys.path:
            sys.path.insert(0, str(content))  # what /opt/python is in Lambda
        self.resolver.refs[logical_id] = (
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{props.get('LayerName', logical_id)}:1"
        )

    def _create_Serverless_HttpApi(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        self.http_apis[logical_id] = props
        self.resolver.refs[logical_id] = f"local{logical_id.lower()}"

    def _create_S3_Bucket(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        s3 = _aws("s3")
        name = props.get("BucketName", logical_id.lower())
        s3.create_bucket(Bucket=name)
        if "BucketEncryption" in props:
            rules = [
                {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if props.get("VersioningConfiguration", {}).get("Status"):
            s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]}
            )
        rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
        if rules:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [self._lifecycle_rule(rule) for rule in rules]}
            )
        cors = props.get("CorsConfiguration", {}).get("CorsRules")
        if cors:
            renamed = {"MaxAge": "MaxAgeSeconds", "Id": "ID", "ExposedHeaders": "ExposeHeaders"}
            rules = [{renamed.get(k, k): v for k, v in rule.items()} for rule in cors]
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})
        self.buckets[logical_id] = name
        self.resolver.refs[logical_id] = name
        self.resolver.attrs[logical_id] = {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
        }

    @staticmethod
    def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
        converted: dict[str, Any] = {"ID": rule.get("Id", "rule"), "Status": rule["Status"]}
        converted["Filter"] = {"Prefix": rule.get("Prefix", "")}
        if "ExpirationInDays" in rule:
            converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if "NoncurrentVersionExpiration" in rule:
            converted["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
            }
        if "AbortIncompleteMultipartUpload" in rule:
            converted["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
            }
        return converted

    def _create_Serverless_Function(self, logical_id: str, resource: dict[str, Any]) -> None:
        defaults = self.resolver.resolve(self.template.get("Globals", {}).get("Function", {}))
        props = _merge_globals(defaults, self._props(resource))
        name = self.resolver.refs[logical_id]
        arn = self.resolver.attrs[logical_id]["Arn"]
        code_dir = (self.template_path.parent / props["CodeUri"]).resolve()
        environment = {k: str(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
        runtime = FunctionRuntime(
            logical_id=logical_id,
            name=name,
            arn=arn,
            code_dir=code_dir,
            handler=props["Handler"],
            timeout=int(props.get("Timeout", 3)),
            memory=int(props.get("MemorySize", 128)),
            environment=environment,
        )
        _aws("lambda").create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", "python3.13"),
            Role=self._role_arn,
            Handler=props["Handler"],
            Code={"ZipFile": _tiny_zip()},
            Timeout=runtime.timeout,
            MemorySize=runtime.memory,
            Environment={"Variables": environment},
            Architectures=props.get("Architectures", ["x86_64"]),
        )
        self.functions[logical_id] = runtime
        for event_name, event in props.get("Events", {}).items():
            self._wire_event(runtime, event_name, event)

    def _wire_event(self, runtime: FunctionRuntime, event_name: str, event: dict[str, Any]) -> None:
        kind, props = event["Type"], event.get("Properties", {})
        if kind == "HttpApi":
            api = self.http_apis[self._api_logical_id(props.get("ApiId"))]
            authorizer_name = props.get("Auth", {}).get(
                "Authorizer", api.get("Auth", {}).get("DefaultAuthorizer")
            )
            authorizer = None
            if authorizer_name and authorizer_name != "NONE":
                authorizer = api["Auth"]["Authorizers"][authorizer_name]["JwtConfiguration"]
            self.routes.append(Route(props["Method"].upper(), props["Path"], runtime, authorizer))
        elif kind == "SQS":
            queue_arn = props["Queue"]
            url = next(u for lid, u in self.queues.items() if self.resolver.attrs[lid]["Arn"] == queue_arn)
            self.sqs_sources.append(
                SqsSource(
                    queue_url=url,
                    queue_arn=queue_arn,
                    function=runtime,
                    batch_size=int(props.get("BatchSize", 10)),
                    report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
            )
        elif kind in ("Schedule", "ScheduleV2"):
            expression = props.get("Schedule") or props["ScheduleExpression"]
            rule_name = f"{runtime.name}-{event_name}"[:64]
            rule_arn = _aws("events").put_rule(Name=rule_name, ScheduleExpression=expression)["RuleArn"]
            self.schedules.append(ScheduleSource(event_name, runtime, _rate_seconds(expression), rule_arn))
        elif kind == "S3":
            self._pending_notifications.append((runtime, props))
        else:
            raise NotImplementedError(
                f"{runtime.logical_id}.{event_name}: event type {kind} is not wired locally"
            )

    def _api_logical_id(self, api_id: Any) -> str:
        if api_id is None:
            raise NotImplementedError("HttpApi events need an explicit ApiId in this template")
        for logical_id in self.http_apis:
            if self.resolver.refs[logical_id] == api_id:
                return logical_id
        raise KeyError(f"unknown HttpApi {api_id}")

    def _apply_bucket_notifications(self) -> None:
        by_bucket: dict[str, list[dict[str, Any]]] = {}
        for runtime, props in self._pending_notifications:
            config: dict[str, Any] = {"LambdaFunctionArn": runtime.arn, "Events": [props["Events"]]}
            if isinstance(props["Events"], list):
                config["Events"] = props["Events"]
            if "Filter" in props:
                config["Filter"] = props["Filter"]
            by_bucket.setdefault(props["Bucket"], []).append(config)
        s3 = _aws("s3")
        for bucket, configs in by_bucket.items():
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": configs}
            )
        self._pending_notifications = []

    def _create_Serverless_StateMachine(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        if "DefinitionUri" in props:
            text = (self.template_path.parent / props["DefinitionUri"]).read_text(encoding="utf-8")
        else:
            text = json.dumps(props["Definition"])
        for key, value in props.get("DefinitionSubstitutions", {}).items():
            text = text.replace("${" + key + "}", str(value))
        name = self.resolver.attrs[logical_id]["Name"]
        arn = _aws("stepfunctions").create_state_machine(
            name=name, definition=text, roleArn=self._role_arn, type=props.get("Type", "STANDARD")
        )["stateMachineArn"]
        self.state_machines[logical_id] = arn

    def _create_CloudWatch_Alarm(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._props(resource)
        allowed = set(
            [
                "AlarmName",
                "AlarmDescription",
                "Namespace",
                "MetricName",
                "Dimensions",
                "Statistic",
                "Period",
                "EvaluationPeriods",
                "Threshold",
                "ComparisonOperator",
                "TreatMissingData",
                "AlarmActions",
                "OKActions",
            ]
        )
        request = {k: v for k, v in props.items() if k in allowed}
        request.setdefault("AlarmName", logical_id)
        for number in ("Period", "EvaluationPeriods"):
            if number in request:
                request[number] = int(request[number])
        if "Threshold" in request:
            request["Threshold"] = float(request["Threshold"])
        _aws("cloudwatch").put_metric_alarm(**request)

    def _function_environment(self) -> dict[str, str]:
        """All handlers share this process, so they share one environment: it must agree."""
        merged: dict[str, str] = {}
        for runtime in self.functions.values():
            for key, value in runtime.environment.items():
                if key in merged and merged[key] != value:
                    raise ValueError(
                        f"environment variable {key} differs between functions "
                        f"({merged[key]!r} vs {value!r}); the local stack runs all handlers in one process"
                    )
                merged[key] = value
        return merged

    # ------------------------------------------------------------------ Lambda dispatch
    def _install_lambda_dispatch(self) -> None:
        """moto's Lambda would run code in Docker; here it calls the real handler in-process."""
        from moto.awslambda.models import LambdaFunction

        stack = self
        original = LambdaFunction._invoke_lambda
        self._original_invoke = original

        def invoke(function: Any, event: Any = None) -> tuple[str, bool, str]:
            runtime = stack.function_by_name(function.function_name)
            if runtime is None:
                return original(function, event)
            payload = json.loads(event) if isinstance(event, str | bytes) else (event or {})
            try:
                return json.dumps(runtime.invoke(payload), default=str), False, ""
            except Exception as error:
                stack.say(f"  ! {runtime.logical_id} raised {type(error).__name__}: {error}")
                body = {
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "stackTrace": traceback.format_tb(error.__traceback__),
                }
                return json.dumps(body), True, ""

        LambdaFunction._invoke_lambda = invoke  # type: ignore[method-assign,assignment]

    def function_by_name(self, name: str) -> FunctionRuntime | None:
        return next((f for f in self.functions.values() if f.name == name), None)

    # ------------------------------------------------------------------ events to the CRM
    def _install_events_tap(self) -> None:
        """A rule on every bus sends every event to a local queue, which is printed and listed."""
        if not self.buses or not self.tap_events:
            return
        sqs, events = _aws("sqs"), _aws("events")
        self._tap_queue_url = sqs.create_queue(QueueName="crmsync-local-events-tap")["QueueUrl"]
        tap_arn = sqs.get_queue_attributes(QueueUrl=self._tap_queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        for bus in self.buses.values():
            events.put_rule(
                Name="crmsync-local-events-tap",
                EventBusName=bus,
                EventPattern=json.dumps({"account": [ACCOUNT]}),
            )
            events.put_targets(
                Rule="crmsync-local-events-tap", EventBusName=bus, Targets=[{"Id": "tap", "Arn": tap_arn}]
            )

    def _drain_events_tap(self) -> int:
        sqs = _aws("sqs")
        received = sqs.receive_message(QueueUrl=self._tap_queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        for message in received:
            event = json.loads(message["Body"])
            with self._events_changed:
                self.events.appendleft(event)
                self._events_changed.notify_all()
            detail = json.dumps(event.get("detail", {}), separators=(",", ":"))
            self.say(f"  event  {event.get('source')}  {event.get('detail-type')}  {detail[:300]}")
            sqs.delete_message(QueueUrl=self._tap_queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(received)

    def wait_for_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The newest event matching `predicate`, waiting for it to arrive (tests, demos)."""
        deadline = time.monotonic() + timeout
        with self._events_changed:
            while True:
                found = next((e for e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching event arrived on the bus")
                self._events_changed.wait(remaining)

    # ------------------------------------------------------------------ event sources
    def _start_threads(self) -> None:
        workers: list[tuple[str, Callable[[], None]]] = [("events-tap", self._run_events_tap)]
        workers += [(f"sqs:{s.function.logical_id}", lambda s=s: self._run_sqs(s)) for s in self.sqs_sources]  # type: ignore[misc]
        if self.run_schedules:
            workers += [(f"schedule:{s.name}", lambda s=s: self._run_schedule(s)) for s in self.schedules]  # type: ignore[misc]
        for name, target in workers:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run_events_tap(self) -> None:
        while not self._stop.is_set():
            try:
                if self._tap_queue_url and self._drain_events_tap():
                    continue
            except Exception as error:  # keep the tap alive; say what went wrong
                self.say(f"  ! events tap: {error}")
            self._stop.wait(0.1)

    def _run_sqs(self, source: SqsSource) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_sqs(source):
                    continue
            except Exception as error:
                self.say(f"  ! {source.function.logical_id} (SQS): {type(error).__name__}: {error}")
            self._stop.wait(0.1)

    def poll_sqs(self, source: SqsSource) -> int:
        """Receive one batch and run it through the function as Lambda's SQS event source does."""
        sqs = _aws("sqs")
        messages = sqs.receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=min(source.batch_size, 10),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._sqs_record(source, m) for m in messages]}
        try:
            result = source.function.invoke(event)
        except Exception as error:
            self.say(f"  ! {source.function.logical_id} failed a batch of {len(messages)}: {error}")
            return len(messages)  # nothing deleted: the messages come back after the visibility timeout
        failed = set()
        if source.report_failures and isinstance(result, dict):
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    @staticmethod
    def _sqs_record(source: SqsSource, message: dict[str, Any]) -> dict[str, Any]:
        attributes = {
            key: value
            for key, value in message.get("Attributes", {}).items()
            if key
            in {
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "MessageGroupId",
                "MessageDeduplicationId",
                "SequenceNumber",
            }
        }
        message_attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": base64.b64encode(value["BinaryValue"]).decode()
                if "BinaryValue" in value
                else None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": message.get("MD5OfBody", hashlib.md5(message["Body"].encode()).hexdigest()),  # noqa: S324
            "eventSource": "aws:sqs",
            "eventSourceARN": source.queue_arn,
            "awsRegion": REGION,
        }

    def _run_schedule(self, source: ScheduleSource) -> None:
        while not self._stop.wait(source.every_s):
            try:
                self.fire_schedule(source)
            except Exception as error:
                self.say(f"  ! schedule {source.function.logical_id}.{source.name}: {error}")

    def fire_schedule(self, source: ScheduleSource) -> Any:
        """Deliver one EventBridge 'Scheduled Event' to the function, as the rule would."""
        source.fired += 1
        event: dict[str, Any] = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": REGION,
            "resources": [source.rule_arn],
            "detail": {},
        }
        return source.function.invoke(event)

    def set_secret(self, logical_id: str, value: str) -> None:
        """What an operator does after deploying: put a value into a template's secret."""
        from crmsync.stores import secrets as layer_secrets

        _aws("secretsmanager").put_secret_value(SecretId=self.resolver.refs[logical_id], SecretString=value)
        # as a new Lambda instance would: secrets are cached per instance
        layer_secrets.secret_json.cache_clear()
        layer_secrets.secret_text.cache_clear()

    # ------------------------------------------------------------------ description
    def describe(self) -> list[str]:
        lines = ["HTTP API routes:"]
        for route in sorted(self.routes, key=lambda r: (r.path, r.method)):
            auth = "JWT" if route.authorizer else "public"
            lines.append(f"  {route.method:6} {route.path:40} -> {route.function.logical_id} ({auth})")
        lines.append("SQS event sources:")
        for s in self.sqs_sources:
            lines.append(
                f"  {s.queue_url.rsplit('/', 1)[1]:40} -> {s.function.logical_id} (batch {s.batch_size})"
            )
        lines.append("Schedules:")
        for sched in self.schedules:
            lines.append(f"  every {sched.every_s:>6.0f}s {sched.name:30} -> {sched.function.logical_id}")
        lines.append("State machines:")
        lines += [f"  {arn}" for arn in self.state_machines.values()]
        lines.append("Tables: " + ", ".join(self.tables.values()))
        lines.append(
            "Buckets: " + ", ".join(self.buckets.values()) + "   Buses: " + ", ".join(self.buses.values())
        )
        if self.skipped:
            lines.append("Not modelled locally: " + ", ".join(f"{k} ({v})" for k, v in self.skipped.items()))
        return lines
