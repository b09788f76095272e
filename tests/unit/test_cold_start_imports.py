"""What each function's init (importing its app.py, as Lambda's init phase does, with the template's
environment for it) loads, and what it must leave to the request that needs it (cold start, issue 11:
bench/coldstart.py measures the time; these check the modules, which do not depend on machine load).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from bench.coldstart import function_env
from bench.tables import ROOT

LOADED = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_init(function: str) -> set[str]:
    """The modules a fresh interpreter holds after importing functions/<function>/app.py."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, str(ROOT / "functions" / function), str(ROOT / "shared")],
        env=function_env(function),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def loaded_of(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if m in prefixes or m.startswith(tuple(p + "." for p in prefixes)))


@pytest.fixture(scope="module")
def send_line_init() -> set[str]:
    return modules_after_init("send_line")


@pytest.fixture(scope="module")
def line_webhook_init() -> set[str]:
    return modules_after_init("line_webhook")


def test_send_line_loads_the_messaging_api_at_init_and_nothing_it_does_not_use(
    send_line_init: set[str],
) -> None:
    assert "linebot.v3.messaging.api.messaging_api" in send_line_init  # at init, not in a send's time
    for module in ("aiohttp", "requests", "linebot.api", "linebot.v3.webhooks", "cems.scenario.engine"):
        assert module not in send_line_init, f"send_line loads {module} at init"


def test_line_webhook_init_loads_no_sender_and_no_reply_client(line_webhook_init: set[str]) -> None:
    # A reply is made on a message event only, so the Messaging API client waits for the first reply.
    for module in ("linebot.v3.messaging.api.messaging_api", "cems.line.sender", "cems.scenario.engine"):
        assert module not in line_webhook_init, f"line_webhook loads {module} at init"
    assert loaded_of(line_webhook_init, ("aiohttp", "requests", "cems.email")) == []
    # The body is read by cems.api_requests: collect's Segment parser stays out.
    assert loaded_of(line_webhook_init, ("cems.collect", "cems.segment", "cems.sites")) == []


def run_python(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(ROOT / "shared"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_messaging_api_methods_build_their_validator_on_first_call_and_still_validate() -> None:
    result = run_python(
        """
        import json
        import pydantic.v1
        from cems.line.api import import_messaging_api
        eager = pydantic.v1.validate_arguments
        api_module = import_messaging_api()
        MessagingApi = api_module.MessagingApi
        from linebot.v3.messaging.api_client import ApiClient
        from linebot.v3.messaging.configuration import Configuration
        api = MessagingApi(ApiClient(Configuration(host="http://127.0.0.1:9", access_token="t")))
        built_at_import = hasattr(MessagingApi.push_message, "vd")
        try:
            api.push_message(push_message_request="not a request", _request_timeout=1)
            error = None
        except pydantic.v1.ValidationError as e:
            error = [list(err["loc"]) for err in e.errors()]
        print(json.dumps({
            "restored": pydantic.v1.validate_arguments is eager,
            "built_at_import": built_at_import,
            "error": error,
            "name": MessagingApi.push_message.__name__,
            "doc": "Sends a message to a user" in (MessagingApi.push_message.__doc__ or ""),
        }))
        """
    )
    assert result["restored"] is True
    assert result["built_at_import"] is False
    assert result["error"] == [["push_message_request"]]
    assert result["name"] == "push_message"
    assert result["doc"] is True


def test_an_sdk_already_imported_is_used_as_it_is() -> None:
    result = run_python(
        """
        import json
        from linebot.v3.messaging.api.messaging_api import MessagingApi
        from cems.line.api import import_messaging_api
        print(json.dumps({"same": import_messaging_api().MessagingApi is MessagingApi,
                          "eager": hasattr(MessagingApi.push_message, "vd")}))
        """
    )
    assert result == {"same": True, "eager": True}


@pytest.fixture(scope="module")
def collect_init() -> set[str]:
    return modules_after_init("collect")


def test_http_functions_load_one_powertools_resolver_and_no_asyncio(
    collect_init: set[str], line_webhook_init: set[str]
) -> None:
    for loaded in (collect_init, line_webhook_init):
        assert "aws_lambda_powertools.event_handler.api_gateway" in loaded
        assert loaded_of(loaded, ("asyncio", "aws_lambda_powertools.event_handler.appsync")) == []
        assert "aws_lambda_powertools.utilities.data_classes.s3_event" not in loaded


def test_the_lazy_powertools_packages_still_give_everything_else_the_whole_package() -> None:
    result = run_python(
        """
        import json, sys
        from cems import lazy_packages
        lazy_packages.install(lazy_packages.POWERTOOLS)
        from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
        from aws_lambda_powertools.utilities.data_classes import SQSEvent
        partial = "aws_lambda_powertools.event_handler.appsync" not in sys.modules
        lazy = lazy_packages.is_lazy("aws_lambda_powertools.event_handler")
        from aws_lambda_powertools.event_handler import AppSyncResolver
        import aws_lambda_powertools.event_handler as handler
        try:
            handler.no_such_name
            missing = False
        except AttributeError:
            missing = True
        print(json.dumps({
            "partial": partial, "lazy": lazy, "names": sorted(set(handler.__all__) - set(dir(handler))),
            "missing": missing, "resolver": APIGatewayHttpResolver.__module__, "sqs": SQSEvent.__name__,
            "appsync": AppSyncResolver.__module__,
        }))
        """
    )
    assert result == {
        "partial": True,
        "lazy": True,
        "names": [],
        "missing": True,
        "resolver": "aws_lambda_powertools.event_handler.api_gateway",
        "sqs": "SQSEvent",
        "appsync": "aws_lambda_powertools.event_handler.appsync",
    }


FIRST_REQUEST = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app

class Context:
    function_name = "Bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-northeast-1:123456789012:function:Bench"
    aws_request_id = "first-request"

response = app.lambda_handler(json.loads(sys.stdin.read()), Context())
# Still partial: the package's whole __init__ (every resolver) was never run.
lazy = "aws_lambda_powertools.event_handler.appsync" not in sys.modules
print(json.dumps({"response": response, "lazy": lazy}))
"""


def first_request(function: str, event: dict[str, Any], **env: str) -> dict[str, Any]:
    """A fresh interpreter's init and first request of functions/<function>/app.py (nothing in it
    reaches AWS: the environment points at a port where nothing listens)."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST, str(ROOT / "functions" / function), str(ROOT / "shared")],
        input=json.dumps(event),
        env={**function_env(function), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def http_event(method: str, path: str, headers: dict[str, str], body: str = "") -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.1"},
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def test_collect_answers_its_first_request_through_the_lazy_packages() -> None:
    result = first_request("collect", http_event("GET", "/tag.js", {"host": "api.example.com"}))
    assert result["response"]["statusCode"] == 200
    assert result["response"]["headers"]["Content-Type"].startswith("application/javascript")
    assert result["lazy"] is True  # nothing on the way needed the whole package


def test_line_webhook_refuses_a_bad_signature_on_its_first_request() -> None:
    event = http_event(
        "POST",
        "/line/webhook",
        {"host": "api.example.com", "content-type": "application/json", "x-line-signature": "bad"},
        json.dumps({"destination": "U0", "events": []}),
    )
    result = first_request("line_webhook", event, CEMS_LINE_CHANNEL_SECRET="first-request-secret")
    assert result["response"]["statusCode"] == 401


def test_send_line_drops_an_invalid_dispatch_on_its_first_request() -> None:
    record = {
        "messageId": "m1",
        "receiptHandle": "h1",
        "body": "{not json",
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:LineSendQueue",
        "awsRegion": "ap-northeast-1",
    }
    result = first_request("send_line", {"Records": [record]})
    assert result["response"] == {"batchItemFailures": []}
