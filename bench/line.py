"""LINE figures: API calls per recipient, and the cold start of the two LINE functions.

(a) Calls per recipient: send_line's sender sends dispatches to N customers through the fake LINE API
(cems.local.fake_line on a local port) with DynamoDB in moto, and the fake counts the calls it
accepted. Identical content should take ceil(N/500) multicasts, personalised content one push each.

(b) Cold start: fresh interpreters import functions/line_webhook/app.py and functions/send_line/app.py
(import and init, as Lambda's init phase does) alternately with a bare `import boto3`, the order
rotating each round; the ratios are medians of per-round ratios, as bench.coldstart does for collect.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import UTC, datetime, timedelta

from bench.coldstart import NO_AWS, _child_env, compare_functions
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, create_tables

ROUNDS = 9
FUNCTIONS = ("line_webhook", "send_line")
IDENTICAL_SIZES = (1, 10, 500, 501, 1200, 5000)
PERSONALISED_SIZES = (10, 200)
TOKEN = "bench-channel-access-token"


def measure(rounds: int = ROUNDS, python: str | None = None) -> Measured:
    calls = _calls_per_recipient()
    cold = _cold_start(rounds, python or sys.executable)
    return Measured(calls.figures + cold.figures, calls.notes + cold.notes)


# --- (a) API calls per recipient ------------------------------------------------------------------


def _calls_per_recipient() -> Measured:
    import boto3
    from cems import clock
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.adapters.dynamodb.line_deliveries import DeliveryStore
    from cems.adapters.line_api import LineGateway
    from cems.line.api import messaging_api
    from cems.line.config import LineSettings
    from cems.line.dispatch import LineDispatch
    from cems.line.sender import LineSender
    from cems.local.fake_line import FakeLine, FakeLineServer
    from cems.models import ChannelState, Profile
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    fake = FakeLine(TOKEN)
    server = FakeLineServer(fake).start()
    figures: list[Figure] = []
    try:
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            create_tables(dynamodb)
            customers = CustomerStore("CustomersTable", dynamodb)
            now = datetime.now(UTC)
            total = max(*IDENTICAL_SIZES, *PERSONALISED_SIZES)
            for start in range(0, total, 25):
                requests = [
                    {
                        "PutRequest": {
                            "Item": customers.profile_item(
                                Profile(
                                    customer_id=f"cus_{n}",
                                    line_user_id=f"U{n:032x}",
                                    channels={
                                        "line": ChannelState(reachable=True, consent=True, updated_at=now)
                                    },
                                    first_seen_at=now,
                                    updated_at=now,
                                )
                            )
                        }
                    }
                    for n in range(start, min(start + 25, total))
                ]
                dynamodb.batch_write_item(RequestItems={"CustomersTable": requests})  # type: ignore[dict-item]
            settings = LineSettings(api_url=server.url)
            sender = LineSender(
                customers,
                DeliveryStore("DeliveriesTable", dynamodb, timedelta(days=1)),
                LineGateway(lambda: messaging_api(settings, TOKEN)),
            )
            text = {"type": "text", "text": "新茶のご案内"}
            for n in IDENTICAL_SIZES:
                fake.reset()
                ids = [f"cus_{i}" for i in range(n)]
                body = LineDispatch(idempotency_key=f"bench-identical-{n}", recipients=ids, messages=[text])
                report = sender.handle(body.to_sqs_body())
                assert report.sent == n, report
                calls = len([c for c in fake.calls if c["status"] == 200])
                figures.append(
                    Figure(
                        f"LINE calls per recipient, identical message, N={n}",
                        calls / n,
                        aim=("<=", math.ceil(n / 500) / n),
                        digits=6,
                    )
                )
            for n in PERSONALISED_SIZES:
                fake.reset()
                ids = [f"cus_{i}" for i in range(n)]
                personal = {c: [{"type": "text", "text": f"{c} 様、カートに商品が残っています"}] for c in ids}
                body = LineDispatch(
                    idempotency_key=f"bench-personal-{n}", recipients=ids, personalised=personal
                )
                report = sender.handle(body.to_sqs_body())
                assert report.sent == n, report
                calls = len([c for c in fake.calls if c["status"] == 200])
                figures.append(
                    Figure(
                        f"LINE calls per recipient, personalised, N={n}", calls / n, aim=("<=", 1.0), digits=6
                    )
                )
        clock.reset()
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    notes = [
        "LINE calls: the send_line sender against the fake LINE API (cems.local.fake_line) with DynamoDB "
        "in moto; identical content goes by multicast (500 a call), personalised content by push"
    ]
    return Measured(figures, notes)


# --- (b) cold start -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = _child_env(NO_AWS)
    env.update(
        {
            "DELIVERIES_TABLE": "DeliveriesTable",
            "LINE_SEND_QUEUE_URL": f"{NO_AWS}/123456789012/LineSendQueue",
            "CEMS_LINE_API_URL": NO_AWS,
            "CEMS_LINE_LINK_PAGE_URL": "https://shop.example.jp/line-link",
            "CEMS_LINE_CHANNEL_SECRET": "bench-channel-secret",
            "CEMS_LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
        }
    )
    return env


def _cold_start(rounds: int, python: str) -> Measured:
    return compare_functions(rounds, python, FUNCTIONS, _env(), "LINE")
