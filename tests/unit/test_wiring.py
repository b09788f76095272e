"""The composition root builds each function from its settings alone, and a builder loads only what its
function runs (cold start): collect never loads the scenario engine, the LINE SDK or the email sender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
# Nothing listens on the discard port: a builder that called AWS at init would fail, not pass.
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "ap-northeast-1",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "LINE_CHANNEL_SECRET_PARAMETER": "/cems/line/channel-secret",
    "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER": "/cems/line/channel-access-token",
    "TRACKING_SECRET_PARAMETER": "/cems/tracking-secret",
    "LINE_SEND_QUEUE_URL": "http://127.0.0.1:9/queue/LineSendQueue",
    "EMAIL_SEND_QUEUE_URL": "http://127.0.0.1:9/queue/EmailSendQueue",
    "BROADCAST_QUEUE_URL": "http://127.0.0.1:9/queue/BroadcastQueue",
    "TIMER_QUEUE_URL": "http://127.0.0.1:9/queue/TimerQueue",
    "EMAIL_FROM_ADDRESS": "shop@shop.example.jp",
    "EMAIL_FROM_NAME": "Sample Tea Shop",
    "EMAIL_POSTAL_ADDRESS": "1-1 Chiyoda, Tokyo",
    "EMAIL_CONTACT": "support@shop.example.jp",
    "ENGAGE_BASE_URL": "https://links.shop.example.jp",
}
FUNCTIONS = (
    "collect",
    "line_webhook",
    "trigger",
    "tick",
    "timer",
    "broadcast",
    "scenario_loader",
    "send_line",
    "send_email",
    "engage",
    "ses_events",
    "operator_actions",  # admin's and console's
    "audience",
    "console",
)
BUILD = """
import json, sys
from cems import wiring
from aws_lambda_powertools import Logger
for function in sys.argv[1:]:
    builder = getattr(wiring, function)
    builder(Logger()) if function in ("send_line", "send_email") else builder()
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_building(*functions: str) -> set[str]:
    """The modules a fresh interpreter holds after building these functions' services, as their init."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CEMS_", "LINE_", "EMAIL_"))}
    env.update(ENVIRONMENT, PYTHONPATH=str(ROOT / "shared"))
    done = subprocess.run(
        [sys.executable, "-c", BUILD, *functions],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_collect_loads_neither_the_engine_nor_the_line_sdk_nor_the_email_sender() -> None:
    loaded = _modules_after_building("collect")
    for module in (
        "cems.scenario.engine",
        "cems.scenario.model",
        "linebot",
        "cems.email.compose",
        "cems.email.config",
    ):
        assert module not in loaded, f"collect loads {module}"


def test_every_function_is_built_from_its_environment_without_calling_aws() -> None:
    assert "cems.wiring" in _modules_after_building(*FUNCTIONS)
