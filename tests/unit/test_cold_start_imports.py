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


def test_send_line_loads_the_messaging_api_without_building_its_validators(send_line_init: set[str]) -> None:
    assert "linebot.v3.messaging.api.messaging_api" in send_line_init  # at init, not in a send's time
    for module in ("aiohttp", "requests", "linebot.api", "linebot.v3.webhooks", "cems.scenario.engine"):
        assert module not in send_line_init, f"send_line loads {module} at init"


def test_line_webhook_init_loads_no_sender_and_no_reply_client(line_webhook_init: set[str]) -> None:
    # A reply is made on a message event only, so the Messaging API client waits for the first reply.
    for module in ("linebot.v3.messaging.api.messaging_api", "cems.line.sender", "cems.scenario.engine"):
        assert module not in line_webhook_init, f"line_webhook loads {module} at init"
    assert loaded_of(line_webhook_init, ("aiohttp", "requests", "cems.email")) == []


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
