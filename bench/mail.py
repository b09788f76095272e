"""Email figures: AWS requests per email sent, and the cold start of send_email and engage.

(a) Requests per email: send_email's sender (cems.email.sender, as its handler builds it) sends
dispatches to customers who agreed to email, with DynamoDB and SES v2 in moto; a botocore hook
counts every AWS request after a warm-up mail. The minimum is one SES call plus the bookkeeping:
the profile and suppression reads, the claim before the call and the outcome after it, and the
report counter (one transaction, once per dispatch).

(b) Cold start: fresh interpreters import functions/send_email/app.py and functions/engage/app.py
(import and init) alternately with a bare `import boto3`, as bench.coldstart does for collect.

(Not bench/email.py: the cold-start children run with bench/ first on sys.path, where that name
would hide the standard library's email package.)
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bench.coldstart import NO_AWS, _child_env, compare_functions
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, ROOT, create_tables

ROUNDS = 9
FUNCTIONS = ("send_email", "engage")
MAILS = 20
SENDER = "shop@midori-tea.example.jp"
SETTINGS = {
    "EMAIL_FROM_ADDRESS": SENDER,
    "EMAIL_FROM_NAME": "茶寮みどり",
    "EMAIL_POSTAL_ADDRESS": "〒100-0001 東京都千代田区千代田1-1",
    "EMAIL_CONTACT": "support@midori-tea.example.jp",
    "SES_CONFIGURATION_SET": "cems-dev",
    "ENGAGE_BASE_URL": "https://links.midori-tea.example.jp",
    "CEMS_TRACKING_SECRET": "bench-tracking-secret",
    "CUSTOMERS_TABLE": "CustomersTable",
    "EVENTS_TABLE": "EventsTable",
    "DELIVERIES_TABLE": "DeliveriesTable",
    "JOURNEYS_TABLE": "JourneysTable",
}


def measure(rounds: int = ROUNDS, python: str | None = None) -> Measured:
    requests = _requests_per_email()
    env = _child_env(NO_AWS)
    env.update(SETTINGS)
    env["EMAIL_SEND_QUEUE_URL"] = f"{NO_AWS}/123456789012/EmailSendQueue"
    cold = compare_functions(rounds, python or sys.executable, FUNCTIONS, env, "email")
    return Measured(requests.figures + cold.figures, requests.notes + cold.notes)


def _requests_per_email() -> Measured:
    import importlib.util

    import boto3
    from cems import clock
    from cems.adapters import aws
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.email.dispatch import EmailDispatch
    from cems.models import Channel, ChannelState, Profile
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in (*FAKE_AWS_ENV, *SETTINGS)}
    os.environ.update(FAKE_AWS_ENV)
    os.environ.update(SETTINGS)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    counted: Counter[str] = Counter()
    try:
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            create_tables(dynamodb)
            ses = boto3.client("sesv2", region_name=REGION)
            ses.create_email_identity(EmailIdentity=SENDER)
            ses.create_configuration_set(ConfigurationSetName="cems-dev")
            customers = CustomerStore("CustomersTable", dynamodb)
            now = datetime.now(UTC)
            for n in range(MAILS + 1):
                profile = Profile(
                    customer_id=f"cus_{n}",
                    traits={"email": f"guest{n}@example.com", "last_name": "佐藤"},
                    channels={Channel.EMAIL: ChannelState(reachable=True, consent=True, updated_at=now)},
                    first_seen_at=now,
                    updated_at=now,
                )
                dynamodb.put_item(TableName="CustomersTable", Item=customers.profile_item(profile))
            # The handler's own sender, built by its init (functions/send_email/app.py).
            aws.dynamodb.cache_clear()
            app_path = ROOT / "functions" / "send_email" / "app.py"
            spec = importlib.util.spec_from_file_location("bench_send_email", app_path)
            assert spec is not None and spec.loader is not None
            app = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(app)
            sender = app.sender

            def dispatch(n: int) -> str:
                return EmailDispatch(
                    idempotency_key=f"bench-{n}",
                    customer_id=f"cus_{n}",
                    subject="新茶のご案内",
                    html='<p>新茶が入荷しました。<a href="https://shop.example.jp/shincha">見る</a></p>',
                    text="新茶が入荷しました。 https://shop.example.jp/shincha",
                    scenario_id="bench",
                    version=1,
                    step_id="announce",
                ).to_sqs_body()

            assert sender.handle(dispatch(MAILS)).sent == 1  # warm-up: indexes the scenario's counters

            def count(model: Any, **_: Any) -> None:
                counted[f"{model.service_model.service_name}.{model.name}"] += 1

            for client in (aws.dynamodb(), sender.gateway.client()):
                client.meta.events.register("before-call", count)
            for n in range(MAILS):
                assert sender.handle(dispatch(n)).sent == 1
        clock.reset()
    finally:
        aws.dynamodb.cache_clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    per_mail = {name: count / MAILS for name, count in sorted(counted.items())}
    figures = [
        Figure("AWS requests per email sent", sum(per_mail.values()), aim=("<=", 6.0)),
        Figure("  of which SES SendEmail", per_mail.get("sesv2.SendEmail", 0.0), aim=("<=", 1.0)),
    ]
    notes = [
        "email requests: "
        + ", ".join(f"{name} {value:g}" for name, value in per_mail.items())
        + f" per mail over {MAILS} mails (moto in process, after a warm-up mail)"
    ]
    return Measured(figures, notes)
