"""The local stack runs every function in one process, where Python's logging is shared: each log
line must still name the function (and invocation) that wrote it, as it does on Lambda, where each
execution environment is a process of its own. The log privacy e2e test, and anyone reading the
stack's output, tells the functions apart by the `function_name` of each line."""

from __future__ import annotations

import importlib
import json
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from cems.local.cfn import FunctionSpec
from cems.local.functions import LocalFunction

# A function that logs once its invocation has started, after the test says so (`release`): by then
# the other function's invocation has started and logged.
HANDLER = """
import {sync}
from cems.logs import function_logger

logger = function_logger(service="{service}")


@logger.inject_lambda_context
def handler(event, context):
    if event.get("hold"):
        {sync}.started.set()
        assert {sync}.release.wait(30)
    logger.info("{message}")
    return context.aws_request_id
"""


def _function(folder: Path, name: str, service: str, sync: str) -> LocalFunction:
    module = f"{name.lower()}_{uuid.uuid4().hex[:8]}"
    source = HANDLER.format(sync=sync, service=service, message=f"from {name}")
    (folder / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    spec = FunctionSpec(
        logical_id=name, code_dir=folder, handler=f"{module}.handler", environment={}, timeout=30, events={}
    )
    function = LocalFunction(spec)
    function.warm()
    return function


def test_concurrent_functions_each_log_under_their_own_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One service name for both, as the template's Globals give every function (POWERTOOLS_SERVICE_NAME):
    # so both modules' Powertools Loggers are one logging.Logger with one formatter. Unique to this
    # test, so no other test's logger is touched.
    service = f"local-logs-{uuid.uuid4().hex[:8]}"
    sync = f"local_logs_sync_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{sync}.py").write_text(
        "import threading\nstarted = threading.Event()\nrelease = threading.Event()\n", encoding="utf-8"
    )
    held = _function(tmp_path, "HeldFunction", service, sync)
    other = _function(tmp_path, "OtherFunction", service, sync)
    signals = importlib.import_module(sync)
    answers: dict[str, str] = {}
    worker = threading.Thread(target=lambda: answers.update(held=held.invoke({"hold": True})))
    worker.start()
    try:
        assert signals.started.wait(30)
        # OtherFunction's whole invocation happens while HeldFunction's is under way, as a poller's
        # invocation does while the HTTP thread's is (the local SES bounce, then trigger on its event).
        answers["other"] = other.invoke({})
    finally:
        signals.release.set()
        worker.join(30)

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_message = {r["message"]: r for r in records if r.get("service") == service}
    assert by_message["from HeldFunction"]["function_name"] == "HeldFunction"
    assert by_message["from HeldFunction"]["function_request_id"] == answers["held"]
    assert by_message["from OtherFunction"]["function_name"] == "OtherFunction"
    assert by_message["from OtherFunction"]["function_request_id"] == answers["other"]
