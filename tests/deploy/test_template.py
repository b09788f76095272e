"""Deploy checks that need no AWS account and no Docker: the template lints, SAM accepts it, and every
function's dependencies resolve for the Lambda platform (python3.13 on arm64).

The dependency check asks pip's configured package index, as `sam build` would; nothing is installed.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cems.local.cfn import load_template

from bench.lambda_venv import find_interpreter

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "template.yaml"
BIN = Path(sys.executable).parent
# Each check finishes in a few seconds; the limit only stops a hung tool.
TIMEOUT = 120
LAMBDA_PLATFORM = [
    "--platform",
    "manylinux2014_aarch64",
    "--python-version",
    "3.13",
    "--implementation",
    "cp",
]


@functools.cache
def _loaded_template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _template() -> dict[str, Any]:
    # A copy: a test may change what it gets (the circular-dependency check rewrites CodeUri).
    return copy.deepcopy(_loaded_template())


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in _template()["Resources"].items() if r["Type"] == kind}


def _offline_aws_env(home: Path) -> dict[str, str]:
    """Fake credentials and a fixed region, with nothing read from the user's AWS or SAM config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAM_"))}
    env.update(
        {
            "HOME": str(home),
            "AWS_DEFAULT_REGION": "ap-northeast-1",
            "AWS_REGION": "ap-northeast-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAM_CLI_TELEMETRY": "0",
        }
    )
    # Keep the CA bundle the environment points boto at, if any.
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(map(str, result.args))} -> rc {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_cfn_lint_passes() -> None:
    result = _run([str(BIN / "cfn-lint"), str(TEMPLATE)], cwd=ROOT)
    assert result.returncode == 0, _explain(result)


def test_sam_validate_lint_passes(tmp_path: Path) -> None:
    # --lint runs cfn-lint on the transformed template locally: no credentials or network are needed.
    # cwd is the repository so samconfig.toml applies, as it does for `sam deploy`.
    result = _run(
        [str(BIN / "sam"), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=_offline_aws_env(tmp_path),
    )
    assert result.returncode == 0, _explain(result)
    assert "is a valid SAM Template" in result.stdout + result.stderr, _explain(result)


def test_every_function_folder_has_a_handler_and_requirements() -> None:
    functions = _resources("AWS::Serverless::Function")
    assert functions, "the template declares no functions"
    for name, function in functions.items():
        code = ROOT / function["Properties"]["CodeUri"]
        module = function["Properties"]["Handler"].split(".")[0]
        assert (code / f"{module}.py").is_file(), f"{name}: no {module}.py in {code}"
        assert (code / "app.py").is_file(), f"{name}: no app.py in {code}"
        assert (code / "requirements.txt").is_file(), f"{name}: no requirements.txt in {code}"


def test_the_layer_is_the_shared_folder() -> None:
    layers = _resources("AWS::Serverless::LayerVersion")
    assert [layer["Properties"]["ContentUri"].rstrip("/") for layer in layers.values()] == ["shared"]
    assert (ROOT / "shared" / "requirements.txt").is_file()
    assert (ROOT / "shared" / "cems" / "__init__.py").is_file()


def _function_requirements() -> list[Path]:
    return sorted((ROOT / "functions").glob("*/requirements.txt"))


@pytest.mark.parametrize("requirements", _function_requirements(), ids=lambda p: p.parent.name)
def test_dependencies_resolve_for_the_lambda_platform(requirements: Path, tmp_path: Path) -> None:
    """What `sam build` would install for python3.13 arm64, resolved from wheels only (no Docker)."""
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            str(tmp_path / "target"),
            *LAMBDA_PLATFORM,
            "--only-binary=:all:",
            "-r",
            str(ROOT / "shared" / "requirements.txt"),
            "-r",
            str(requirements),
        ],
        cwd=ROOT,
    )
    assert result.returncode == 0, _explain(result)
    assert "Would install" in result.stdout, _explain(result)
    assert not list((tmp_path / "target").glob("*")), "a dry run must install nothing"


def test_every_template_function_is_covered_by_the_dependency_check() -> None:
    checked = {p.parent.resolve() for p in _function_requirements()}
    for name, function in _resources("AWS::Serverless::Function").items():
        assert (ROOT / function["Properties"]["CodeUri"]).resolve() in checked, name


def _pyc_flags(pyc: Path) -> int:
    """The flags word of a .pyc header (PEP 552): 0 timestamp-based, 1 unchecked hash, 3 checked hash."""
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def test_sam_build_ships_the_layer_with_bytecode_for_the_runtime(tmp_path: Path) -> None:
    """`sam build` of the layer (shared/Makefile): arm64 wheels for python3.13, cems, and bytecode for
    every module in unchecked-hash mode, so a cold start on Lambda's read-only layer compiles nothing.
    Needs Python 3.13 on PATH, as `sam build` does (the bench's interpreter search finds pyenv's)."""
    interpreter = find_interpreter()
    assert interpreter.is_lambdas, f"no Python 3.13 to build the layer with: {interpreter.note}"
    env = _offline_aws_env(tmp_path)
    env["PATH"] = f"{Path(interpreter.path).parent}{os.pathsep}{env.get('PATH', '')}"
    result = _run(
        [
            str(BIN / "sam"),
            "build",
            "CemsLayer",
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(tmp_path / "build"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, _explain(result)
    layer = tmp_path / "build" / "CemsLayer" / "python"
    for package in ("cems", "pydantic", "pydantic_core", "aws_lambda_powertools", "linebot", "liquid"):
        assert (layer / package / "__init__.py").is_file(), f"the layer has no {package}"
    # The runtime's boto3 and botocore serve; a copy in the layer would come first on sys.path and
    # pair the runtime's boto3 with a botocore it was not released with.
    for package in ("boto3", "botocore", "s3transfer"):
        assert not (layer / package).exists(), f"the layer ships {package}"
    # pip took the arm64 build of the one compiled dependency every function loads.
    assert list((layer / "pydantic_core").glob("*aarch64*.so")), list((layer / "pydantic_core").iterdir())
    sources = [p for p in layer.rglob("*.py") if "__pycache__" not in p.parts]
    missing = []
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        if not pyc.is_file():
            missing.append(source.relative_to(layer))
        elif source.is_relative_to(layer / "cems"):
            assert _pyc_flags(pyc) == 1, f"{pyc} is not unchecked-hash bytecode"
    # Only Python 2 modules that Python 3 never imports may lack bytecode; every cems module has it.
    assert all(not path.is_relative_to("cems") for path in missing), missing
    assert len(missing) <= len(sources) // 100, missing
    cems_sources = [p for p in sources if p.is_relative_to(layer / "cems")]
    shipped = list((ROOT / "shared" / "cems").rglob("*.py"))
    assert len(cems_sources) == len(shipped), "cems was not copied whole"


class _NoManagedPolicies:
    """samtranslator asks IAM for managed policy ARNs; the template names none, so nothing is needed."""

    def load(self) -> dict[str, str]:
        return {}


def _references(value: Any, found: set[str]) -> set[str]:
    """Logical ids a CloudFormation value points at: Ref, GetAtt and ${...} in Sub."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add((inner if isinstance(inner, list) else str(inner).split("."))[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found.update(re.findall(r"\$\{([^}!.][^}.]*)", text))
                if not isinstance(inner, str):
                    _references(inner[1], found)
            else:
                _references(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _references(inner, found)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in visiting:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        visiting.add(node)
        for target in sorted(graph[node]):
            found = visit(target, [*path, node])
            if found:
                return found
        visiting.remove(node)
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node, [])
        if found:
            return found
    return None


def test_the_deployed_template_has_no_circular_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudFormation refuses a stack whose resources depend on each other in a circle (e.g. a bucket
    notifying a function whose environment names the bucket); cfn-lint and `sam validate --lint` do not
    see it, because it appears only after SAM's transform, so the transform is run here."""
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    template = _template()
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                properties[key] = "s3://packaged-by-sam/code.zip"  # what `sam package` puts there
    resources = transform(template, {}, _NoManagedPolicies())["Resources"]
    graph = {}
    for name, resource in resources.items():
        depends = resource.get("DependsOn", [])
        targets = _references(resource.get("Properties", {}), set()) | set(
            [depends] if isinstance(depends, str) else depends
        )
        graph[name] = {t for t in targets if t in resources}
    assert _cycle(graph) is None, f"circular dependency: {' -> '.join(_cycle(graph) or [])}"


def test_the_circular_dependency_check_sees_a_bucket_notifying_a_function_that_names_it() -> None:
    graph = {"Bucket": {"Function"}, "Function": {"Role", "Bucket"}, "Role": set()}
    assert _cycle(graph) == ["Bucket", "Function", "Bucket"]


def _watched_queues() -> dict[str, str]:
    """Queue logical id -> the alarm that goes off when a message waits in it."""
    return {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: name
        for name, a in _resources("AWS::CloudWatch::Alarm").items()
        if a["Properties"]["Namespace"] == "AWS/SQS"
        and a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and a["Properties"]["Threshold"] == 0
        and a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
    }


def _consumed_queues() -> set[str]:
    """Queues some function reads (an SQS event); every other queue is where failures are kept."""
    return {
        event["Properties"]["Queue"]["Fn::GetAtt"][0]
        for function in _resources("AWS::Serverless::Function").values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "SQS"
    }


def test_alarms_watch_dead_letters_sender_failures_the_line_limit_and_webhook_signatures() -> None:
    alarms = _resources("AWS::CloudWatch::Alarm")
    watched = {a["Properties"]["MetricName"] for a in alarms.values()}
    assert {
        "ApproximateNumberOfMessagesVisible",
        "LineRecipientsFailed",
        "EmailFailed",
        "LineMonthlyLimitReached",
        "LineWebhookSignatureFailures",
    } <= watched
    # Dead-letter and failure queues are exactly the queues no function reads: each one alarms.
    failure_queues = set(_resources("AWS::SQS::Queue")) - _consumed_queues()
    assert {n for n in failure_queues if "DeadLetter" in n} == {
        "LineSendDeadLetterQueue",
        "EmailSendDeadLetterQueue",
        "WebSendDeadLetterQueue",
        "BroadcastDeadLetterQueue",
        "TimerDeadLetterQueue",
    }
    assert set(_watched_queues()) == failure_queues
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())


def test_the_dashboard_shows_metrics_the_functions_emit() -> None:
    [dashboard] = _resources("AWS::CloudWatch::Dashboard").values()
    body, _ = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    names = {m[1] for w in widgets for m in w["properties"].get("metrics", []) if m[0] == "CEMS"}
    code = "".join(p.read_text("utf-8") for p in (ROOT / "functions").glob("*/app.py"))
    code += "".join(p.read_text("utf-8") for p in (ROOT / "shared" / "cems").rglob("*.py"))
    # send_line and send_email emit prefix + name ("Line" / "Email" + "Sent", ...).
    spelled = {n: (n, n.removeprefix("Line"), n.removeprefix("Email")) for n in names}
    missing = sorted(n for n, ways in spelled.items() if not any(f'"{way}"' in code for way in ways))
    assert not missing, f"dashboard metrics no function emits: {missing}"


def _dashboard_values() -> dict[str, Any]:
    """The dashboard's ${Name} variables and what each stands for."""
    [dashboard] = _resources("AWS::CloudWatch::Dashboard").values()
    _, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    return dict(variables)


def test_the_dashboard_shows_every_failure_queue_and_its_alarm() -> None:
    shown = [v["Fn::GetAtt"] for v in _dashboard_values().values()]
    for queue, alarm in _watched_queues().items():
        assert [queue, "QueueName"] in shown, f"{queue} is not on the dashboard"
        assert [alarm, "Arn"] in shown, f"{alarm} is not on the dashboard"


# --- KMS keys of the SNS topics ---------------------------------------------------------------------


def _key_grants(key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Service principal -> its statement in the key's policy."""
    return {
        s["Principal"]["Service"]: s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if "Service" in s.get("Principal", {})
    }


@pytest.mark.parametrize(("topic", "publisher"), [("AlarmTopic", "cloudwatch"), ("EmailEventsTopic", "ses")])
def test_the_topics_use_customer_managed_keys_their_publishers_may_use(topic: str, publisher: str) -> None:
    resources = _template()["Resources"]
    key_ref = resources[topic]["Properties"]["KmsMasterKeyId"]
    assert isinstance(key_ref, dict), f"{topic} must not use an AWS-managed key ({key_ref})"
    key = resources[key_ref["Ref"]]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    assert any(s["Principal"].get("AWS") == root and s["Action"] == "kms:*" for s in statements)
    grants = _key_grants(key)
    # Only the service that publishes to this topic, and only in this account.
    assert set(grants) == {f"{publisher}.amazonaws.com"}
    grant = grants[f"{publisher}.amazonaws.com"]
    assert grant["Effect"] == "Allow"
    assert set(grant["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert grant["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    aliases = [a for a in _resources("AWS::KMS::Alias").values() if a["Properties"]["TargetKeyId"] == key_ref]
    assert len(aliases) == 1


def test_no_topic_uses_the_aws_managed_sns_key() -> None:
    for name, topic in _resources("AWS::SNS::Topic").items():
        assert topic["Properties"].get("KmsMasterKeyId") != "alias/aws/sns", name


# --- failures are kept -------------------------------------------------------------------------------


def _sqs_destination(config: dict[str, Any]) -> str:
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS", "SAM adds the send permission only when Type is given"
    queue: str = on_failure["Destination"]["Fn::GetAtt"][0]
    assert on_failure["Destination"]["Fn::GetAtt"][1] == "Arn"
    return queue


def _assert_kept_and_loud(queue: str) -> None:
    props = _resources("AWS::SQS::Queue")[queue]["Properties"]
    assert props["MessageRetentionPeriod"] == 14 * 86400
    assert props["SqsManagedSseEnabled"] is True
    assert queue in _watched_queues(), f"no alarm watches {queue}"


def test_the_trigger_stream_mapping_bounds_retries_and_keeps_what_it_gives_up_on() -> None:
    trigger = _resources("AWS::Serverless::Function")["TriggerFunction"]
    mapping = trigger["Properties"]["Events"]["NewEvents"]["Properties"]
    assert 0 <= mapping["MaximumRetryAttempts"] <= 10
    # Shorter than the stream's 24 h, so the failure record still points at readable records.
    assert 60 <= mapping["MaximumRecordAgeInSeconds"] < 86400
    assert mapping["BisectBatchOnFunctionError"] is True
    queue = _sqs_destination(mapping)
    assert queue == "TriggerFailureQueue"
    _assert_kept_and_loud(queue)


ASYNC_EVENT_TYPES = {"S3", "SNS", "Schedule", "ScheduleV2", "CloudWatchEvent", "EventBridgeRule"}


def _async_functions() -> dict[str, dict[str, Any]]:
    return {
        name: f
        for name, f in _resources("AWS::Serverless::Function").items()
        if any(e["Type"] in ASYNC_EVENT_TYPES for e in f["Properties"].get("Events", {}).values())
    }


def test_the_asynchronously_invoked_functions_are_the_loader_ses_events_and_tick() -> None:
    assert set(_async_functions()) == {"ScenarioLoaderFunction", "SesEventsFunction", "TickFunction"}


@pytest.mark.parametrize("function", sorted(_async_functions()))
def test_every_asynchronously_invoked_function_keeps_its_failures_with_an_alarm(function: str) -> None:
    config = _async_functions()[function]["Properties"]["EventInvokeConfig"]
    assert 0 <= config["MaximumRetryAttempts"] <= 2
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600
    _assert_kept_and_loud(_sqs_destination(config))


def _queue_grants(queue: str, service: str) -> list[dict[str, Any]]:
    """The statements of the queue's policies that name this service principal."""
    return [
        statement
        for policy in _resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue} in policy["Properties"]["Queues"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Principal"] == {"Service": service}
    ]


def test_the_schedule_retries_and_dead_letters_what_eventbridge_cannot_deliver() -> None:
    tick = _resources("AWS::Serverless::Function")["TickFunction"]
    schedule = tick["Properties"]["Events"]["EveryMinute"]
    assert schedule["Type"] == "Schedule"
    retry = schedule["Properties"]["RetryPolicy"]
    assert 0 <= retry["MaximumRetryAttempts"] <= 185 and 60 <= retry["MaximumEventAgeInSeconds"] <= 86400
    queue = schedule["Properties"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    _assert_kept_and_loud(queue)
    [grant] = _queue_grants(queue, "events.amazonaws.com")
    assert grant["Action"] == "sqs:SendMessage"
    # Only the rule SAM makes for this event (logical id: function + event).
    rule = {"Fn::GetAtt": ["TickFunctionEveryMinute", "Arn"]}
    assert grant["Condition"] == {"ArnEquals": {"aws:SourceArn": rule}}


def test_the_ses_events_subscription_dead_letters_what_sns_cannot_deliver() -> None:
    ses_events = _resources("AWS::Serverless::Function")["SesEventsFunction"]
    subscription = ses_events["Properties"]["Events"]["EmailEvents"]["Properties"]
    queue = subscription["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    _assert_kept_and_loud(queue)
    [grant] = _queue_grants(queue, "sns.amazonaws.com")
    assert grant["Action"] == "sqs:SendMessage"
    assert grant["Condition"] == {"ArnEquals": {"aws:SourceArn": subscription["Topic"]}}


# --- the public edge: throttling, reserved concurrency, access logs ----------------------------------


def _http_api() -> dict[str, Any]:
    [api] = _resources("AWS::Serverless::HttpApi").values()
    props: dict[str, Any] = api["Properties"]
    return props


def _declared_routes() -> dict[str, str]:
    """Route key ("GET /tag.js") -> the function whose HttpApi event declares it."""
    return {
        f"{e['Properties']['Method'].upper()} {e['Properties']['Path']}": name
        for name, f in _resources("AWS::Serverless::Function").items()
        for e in f["Properties"].get("Events", {}).values()
        if e["Type"] == "HttpApi"
    }


def _parameter_default(ref: dict[str, str], minimum: int) -> int:
    spec = _template()["Parameters"][ref["Ref"]]
    assert spec["Type"] == "Number" and spec["MinValue"] >= minimum, ref
    default: int = spec["Default"]
    assert default >= spec["MinValue"]
    return default


def _throttle(settings: dict[str, Any]) -> tuple[int, int]:
    rate = _parameter_default(settings["ThrottlingRateLimit"], 1)
    burst = _parameter_default(settings["ThrottlingBurstLimit"], 1)
    assert burst >= rate, "a burst below the rate would throttle a steady stream at the rate"
    return rate, burst


def test_every_route_is_throttled_by_parameters() -> None:
    api = _http_api()
    default_rate, _ = _throttle(api["DefaultRouteSettings"])
    routes = api["RouteSettings"]
    # A route key that no event declares makes the stage fail to deploy ("Unable to find Route").
    assert set(routes) <= set(_declared_routes()), set(routes) - set(_declared_routes())
    assert {
        "ANY /v1/{kind}",
        "ANY /v1/line/link",
        "POST /line/webhook",
        "GET /r/{token}",
        "GET /o/{token}",
        "GET /u/{token}",
        "POST /u/{token}",
    } <= set(routes)
    # Every engagement route (click, open, unsubscribe, opt-in confirmation) gets the engage limits.
    engage_routes = {r for r, f in _declared_routes().items() if f == "EngageFunction"}
    assert all(routes[r] == routes["GET /r/{token}"] for r in engage_routes)
    for route, settings in routes.items():
        rate, _ = _throttle(settings)
        assert rate >= default_rate, f"{route} is named to get more than the default, not less"
    assert routes["ANY /v1/{kind}"] == routes["ANY /v1/line/link"]


def test_the_public_functions_reserve_concurrency_from_parameters() -> None:
    functions = _resources("AWS::Serverless::Function")
    conditions = _template()["Conditions"]
    public = set(_declared_routes().values())
    assert {
        "CollectFunction",
        "LineWebhookFunction",
        "EngageFunction",
        "AdminFunction",
        "ConsoleFunction",
    } == public
    for name in public:
        condition, value, otherwise = functions[name]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"]
        assert _parameter_default(value, 0) > 0, name
        # 0 means "no reservation", never "no executions at all".
        assert otherwise == {"Ref": "AWS::NoValue"}
        assert conditions[condition] == {"Fn::Not": [{"Fn::Equals": [value, "0"]}]}


def test_access_logs_name_the_route_never_the_path_query_or_headers() -> None:
    settings = _http_api()["AccessLogSettings"]
    log_group = _resources("AWS::Logs::LogGroup")[settings["DestinationArn"]["Fn::GetAtt"][0]]
    assert 1 <= log_group["Properties"]["RetentionInDays"] <= 90
    fields = json.loads(settings["Format"])
    variables = set(fields.values())
    assert {
        "$context.routeKey",
        "$context.status",
        "$context.requestId",
        "$context.responseLatency",
        "$context.integrationErrorMessage",
        "$context.identity.sourceIp",
    } <= variables
    # Engage paths carry signed tracking tokens; query strings and headers carry keys and personal data.
    for forbidden in ("path", "querystring", "header", "$request", "$input", "userAgent", "stageVariables"):
        assert not any(forbidden.lower() in v.lower() for v in variables), forbidden


# ------------------------------------------------------------------------------------------ audit log

# What no function may do to the audit log (it is append-only): change, overwrite in bulk or delete.
AUDIT_FORBIDDEN = {
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
    "dynamodb:DeleteTable",
    "dynamodb:UpdateTimeToLive",
}


def _names_audit_table(value: Any) -> bool:
    wildcard = value == "*" or (isinstance(value, list) and "*" in value)
    return wildcard or "AuditTable" in _references(value, set())


def _audit_grants(function: dict[str, Any]) -> tuple[set[str], list[str]]:
    """(IAM actions a function's own statements allow on AuditTable, SAM policy templates naming it)."""
    actions: set[str] = set()
    templates: list[str] = []
    for policy in function["Properties"].get("Policies", []):
        if not isinstance(policy, dict):
            continue
        for name, body in policy.items():
            if name != "Statement":
                if "AuditTable" in _references(body, set()):
                    templates.append(name)
                continue
            for statement in body:
                if statement.get("Effect") != "Allow" or not _names_audit_table(statement.get("Resource")):
                    continue
                granted = statement["Action"]
                actions.update([granted] if isinstance(granted, str) else granted)
    return actions, templates


def test_the_admin_function_may_only_append_to_and_query_the_audit_log() -> None:
    actions, templates = _audit_grants(_resources("AWS::Serverless::Function")["AdminFunction"])
    assert templates == []  # every SAM DynamoDB policy template grants more than append and query
    assert {a for a in actions if a.startswith("dynamodb:")} == {"dynamodb:PutItem", "dynamodb:Query"}


def test_no_function_may_change_or_delete_audit_entries() -> None:
    for name, function in _resources("AWS::Serverless::Function").items():
        actions, templates = _audit_grants(function)
        assert templates == [], f"{name}: {templates} on AuditTable grant updates and deletes"
        forbidden = {a for a in actions if a in AUDIT_FORBIDDEN or a in ("dynamodb:*", "*")}
        assert not forbidden, f"{name} may {sorted(forbidden)} on the append-only AuditTable"


def test_the_console_may_queue_test_sends_and_audience_count_segments_and_nothing_else_in_sqs() -> None:
    """The console's test sends (POST /admin/console/scenarios/{id}/test-send) put one dispatch on the
    step's channel's send queue, and a large table's audience count (POST /admin/console/audience) its
    segments on BroadcastQueue, found by the URLs its environment has from Globals."""
    console = _resources("AWS::Serverless::Function")["ConsoleFunction"]["Properties"]
    granted: dict[str, list[Any]] = {}
    for policy in console["Policies"]:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            for action in actions:
                if action.startswith("sqs:"):
                    granted.setdefault(action, []).extend(statement["Resource"])
    assert granted == {
        "sqs:SendMessage": [
            {"Fn::GetAtt": ["LineSendQueue", "Arn"]},
            {"Fn::GetAtt": ["EmailSendQueue", "Arn"]},
            {"Fn::GetAtt": ["WebSendQueue", "Arn"]},
            {"Fn::GetAtt": ["BroadcastQueue", "Arn"]},
        ]
    }
    variables = _template()["Globals"]["Function"]["Environment"]["Variables"]
    own = console.get("Environment", {}).get("Variables", {})
    assert {**variables, **own}["BROADCAST_QUEUE_URL"] == {"Ref": "BroadcastQueue"}
    assert {**variables, **own}["LINE_SEND_QUEUE_URL"] == {"Ref": "LineSendQueue"}
    assert {**variables, **own}["EMAIL_SEND_QUEUE_URL"] == {"Ref": "EmailSendQueue"}
    assert {**variables, **own}["WEB_SEND_QUEUE_URL"] == {"Ref": "WebSendQueue"}


def test_the_audit_table_is_kept_recoverable_encrypted_and_expires_by_its_parameter() -> None:
    template = _template()
    table = template["Resources"]["AuditTable"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert template["Parameters"]["AuditRetentionDays"]["Default"] == 400
    variables = template["Resources"]["AdminFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["AUDIT_TABLE"] == {"Ref": "AuditTable"}
    assert variables["CEMS_AUDIT_RETENTION_DAYS"] == {"Ref": "AuditRetentionDays"}


OPERATOR_POLICIES = {
    "OperatorAdminPolicy": "admin",
    "OperatorScenarioDesignerPolicy": "scenario_designer",
    "OperatorContentWriterPolicy": "content_writer",
    "OperatorAnalystPolicy": "analyst",
}


def _statements(policy: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = _resources("AWS::IAM::ManagedPolicy")[policy]["Properties"][
        "PolicyDocument"
    ]["Statement"]
    return statements


def _actions(policy: str) -> set[str]:
    return {
        a
        for s in _statements(policy)
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }


def test_there_is_one_managed_policy_per_operator_role_and_every_statement_carries_the_address_ranges() -> (
    None
):
    assert set(_resources("AWS::IAM::ManagedPolicy")) == set(OPERATOR_POLICIES)
    groups = {r["Properties"]["GroupName"] for r in _resources("AWS::Cognito::UserPoolGroup").values()}
    assert groups == set(OPERATOR_POLICIES.values())
    ranges = {
        "Fn::If": [
            "LimitsOperatorSources",
            {"IpAddress": {"aws:SourceIp": {"Fn::Split": [",", {"Ref": "OperatorSourceCidrs"}]}}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    for policy in OPERATOR_POLICIES:
        for statement in _statements(policy):
            assert statement["Effect"] == "Allow"
            assert statement["Condition"] == ranges, (policy, statement.get("Sid"))


def test_the_operator_policies_grant_what_each_role_may_do_and_no_more() -> None:
    admin, designer = _actions("OperatorAdminPolicy"), _actions("OperatorScenarioDesignerPolicy")
    writer, analyst = _actions("OperatorContentWriterPolicy"), _actions("OperatorAnalystPolicy")
    # Uploading and stopping scenarios (S3 put / delete under scenarios/).
    assert {"s3:PutObject", "s3:DeleteObject"} <= admin & designer
    assert not {"s3:PutObject", "s3:DeleteObject"} & (writer | analyst)
    # Test sends.
    assert "sqs:SendMessage" in admin & designer & writer and "sqs:SendMessage" not in analyst
    # Customer data: the content writer reaches no admin route at all.
    assert "execute-api:Invoke" not in writer
    # Users, the audit log and no one may change or remove an audit entry.
    assert any(a.startswith("cognito-idp:") for a in admin)
    assert not any(a.startswith("cognito-idp:") for a in designer | writer | analyst)
    for policy in OPERATOR_POLICIES:
        for statement in _statements(policy):
            if "AuditTable" in json.dumps(statement["Resource"]):
                assert set(statement["Action"]) <= {"dynamodb:Query", "dynamodb:PutItem"}, policy
    # Analysts and designers reach only the reading routes: finding customers masked, never the one
    # customer route that can unmask (GET /admin/customers/{id}), export or erase.
    for policy in ("OperatorScenarioDesignerPolicy", "OperatorAnalystPolicy"):
        routes = [
            json.dumps(r)
            for s in _statements(policy)
            if s["Action"] == ["execute-api:Invoke"]
            for r in s["Resource"]
        ]
        assert routes and all("/GET/" in r or "/POST/admin/audience" in r for r in routes), routes
        assert not any("admin/customers/" in r or "/*/admin/*" in r for r in routes), routes
