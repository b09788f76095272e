"""Timer lateness (issue 13): how long after its due time a journey's wait ends, on the local stack.

`cems local` in a child process (its own ports); a scenario entered on `Timer Check` that waits one
minute and then sets a trait and ends. The clock is moved a minute (a tick runs then), 50 customers
enter through one /v1/batch, and each journey's lateness is its `ended_at` (the moment the runner
advanced it past the wait) less its `entered_at` plus the minute. With timers, TimerQueue's delayed
messages wake each journey (moto holds a message for its DelaySeconds; the stack's SQS poller looks
every 0.5 s). Beside it, what the minute tick alone would give the same due times: each advanced at
the first tick at or after it (ticks a minute apart from the one the clock move ran), the figures
before issue 13.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, ROOT

COUNT = 50
WAIT = timedelta(minutes=1)
SCENARIO_ID = "bench-timer"
EVENT = "Timer Check"
SCENARIO = {
    "id": SCENARIO_ID,
    "name": "bench: one minute, then a trait",
    "trigger": {"type": "event", "event": EVENT},
    "steps": [
        {"id": "wait", "type": "wait", "duration": "1m"},
        {"id": "mark", "type": "set_trait", "trait": "timer_checked", "value": True},
        {"id": "done", "type": "end"},
    ],
}
# Only tells a hung stack from a slow one.
HANG_SECONDS = 600


def measure() -> Measured:
    import boto3
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.adapters.dynamodb.keys import enrolment_key
    from cems.cli import main as cems_main
    from cems.local.running import running_local_stack
    from cems.local.runs import wait_for_run
    from cems.local.stack import DEFAULT_SECRET_KEY

    with running_local_stack(http_port=0, aws_port=0, cwd=ROOT) as running:
        auth = "Basic " + base64.b64encode(f"{DEFAULT_SECRET_KEY}:".encode()).decode()

        def post(path: str, document: dict[str, Any]) -> dict[str, Any]:
            headers = {"Content-Type": "application/json", "Authorization": auth}
            url, data = f"{running.http_url}{path}", json.dumps(document).encode()
            request = urllib.request.Request(url, data=data, method="POST", headers=headers)
            with urllib.request.urlopen(request, timeout=HANG_SECONDS) as answer:
                body: dict[str, Any] = json.loads(answer.read() or b"{}")
                return body

        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=running.aws_url,
            region_name=REGION,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bench_timer.json"
            path.write_text(json.dumps(SCENARIO), encoding="utf-8")
            saved = os.environ.get("CEMS_AWS_PORT")
            os.environ["CEMS_AWS_PORT"] = running.aws_url.rsplit(":", 1)[1]
            try:
                if cems_main(["scenario", "upload", str(path)]) != 0:
                    raise RuntimeError("cems scenario upload failed")
            finally:
                if saved is None:
                    os.environ.pop("CEMS_AWS_PORT", None)
                else:
                    os.environ["CEMS_AWS_PORT"] = saved
        # trigger caches the active scenarios for a minute of CEMS time; the drain after the move
        # runs a tick at the end of it (the first of the modelled ticks).
        moved = wait_for_run(running.http_url, post("/_local/clock", {"advance_seconds": 61}))
        first_tick = datetime.fromisoformat(moved["now"])
        run = uuid.uuid4().hex[:8]
        users = [f"bench-timer-{run}-{n}" for n in range(COUNT)]
        post("/v1/batch", {"batch": [{"type": "track", "userId": u, "event": EVENT} for u in users]})
        customers = CustomerStore("CustomersTable", dynamodb)
        deadline = time.monotonic() + HANG_SECONDS
        items: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            ids = [customers.customer_for_user_id(u) for u in users]
            if None not in ids:
                keys = [enrolment_key(str(c), SCENARIO_ID) for c in ids]
                read = [
                    dynamodb.get_item(TableName="JourneysTable", Key=k, ConsistentRead=True).get("Item")
                    for k in keys
                ]
                items = [i for i in read if i is not None and i["state"]["S"] == "completed"]
                if len(items) == COUNT:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"only {len(items)} of {COUNT} journeys ended within {HANG_SECONDS} s")

    due = [datetime.fromisoformat(i["entered_at"]["S"]) + WAIT for i in items]
    ended = [datetime.fromisoformat(i["ended_at"]["S"]) for i in items]
    lateness = [(e - d).total_seconds() for e, d in zip(ended, due, strict=True)]
    # The first tick at or after each due time, ticks a minute apart from the first.
    tick_only = [
        ((d - first_tick) // timedelta(minutes=1) + 1) * 60 - (d - first_tick).total_seconds() for d in due
    ]
    name = f"timers: lateness over {COUNT} due journeys"
    figures = [
        Figure(f"{name}, median", statistics.median(lateness), "s", ("<=", 2)),
        Figure(f"{name}, max", max(lateness), "s", ("<=", 5)),
        Figure(f"tick only (modelled): lateness over {COUNT}, median", statistics.median(tick_only), "s"),
        Figure(f"tick only (modelled): lateness over {COUNT}, max", max(tick_only), "s"),
    ]
    notes = [
        f"timers: {COUNT} one-minute waits on the local stack, each from its due time (entered_at + 1 min) "
        "to ended_at, the runner's moment when it advanced the journey; a timer's delay is rounded up to the "
        "second (SQS's unit) and the stack's SQS poller looks every 0.5 s. Tick only: the same due times "
        "advanced at the next minute tick (modelled from the tick the clock move ran), as before issue 13",
    ]
    return Measured(figures, notes)
