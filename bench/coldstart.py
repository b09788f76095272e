"""(b) Cold start of the collect function, as a ratio to a bare `import boto3`.

Fresh interpreters of each kind run alternately (the order rotating each round), so both see the same
machine load; each times itself with perf_counter (see _coldstart_child.py). The ratio is the median
of the per-round ratios. `init` is what Lambda's init phase runs: importing app.py, which builds the
DynamoDB client and the collector. `request` adds the first request (a new visitor's track, against a
moto server in this process), which is what the first user actually waits for.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from cems.adapters.dynamodb.sites import SiteStore
from cems.settings import Settings
from moto.server import ThreadedMotoServer

from bench import payloads
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, ROOT, create_tables

ROUNDS = 13
MODES = ("boto3", "init", "request")
CHILD = ROOT / "bench" / "_coldstart_child.py"
FUNCTION_PATHS = [str(ROOT / "functions" / "collect"), str(ROOT / "shared")]
# Nothing listens on the discard port: an import that called AWS would fail, not pass unnoticed.
NO_AWS = "http://127.0.0.1:9"


def _child_env(endpoint: str) -> dict[str, str]:
    """The function's environment from template.yaml, with fake credentials."""
    # PYDANTIC_ too: app.py sets PYDANTIC_DISABLE_PLUGINS only if the environment does not.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "CEMS_", "PYDANTIC_"))
    }
    env.pop("PYTHONPATH", None)
    env.update(FAKE_AWS_ENV)
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "CEMS_STAGE": "dev",
            "CEMS_EVENT_RETENTION_DAYS": "395",
            "CUSTOMERS_TABLE": "CustomersTable",
            "EVENTS_TABLE": "EventsTable",
            "SITES_TABLE": "SitesTable",
            "IDEMPOTENCY_TABLE": "IdempotencyTable",
            # The template names each secret's SSM parameter for every function (read on first use,
            # never at init); a function with neither it nor the value set refuses to start.
            "LINE_CHANNEL_SECRET_PARAMETER": "/cems/line/channel-secret",
            "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER": "/cems/line/channel-access-token",
            "TRACKING_SECRET_PARAMETER": "/cems/tracking-secret",
            "POWERTOOLS_SERVICE_NAME": "cems",
            "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
    )
    return env


def http_api_event(kind: str, body: bytes, authorization: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for POST /v1/{kind}."""
    return {
        "version": "2.0",
        "routeKey": "ANY /v1/{kind}",
        "rawPath": f"/v1/{kind}",
        "rawQueryString": "",
        "headers": {
            "authorization": authorization,
            "content-type": "application/json",
            "content-length": str(len(body)),
            "host": "bench.execute-api.ap-northeast-1.amazonaws.com",
            "origin": payloads.SHOP,
            "user-agent": payloads.USER_AGENT,
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.ap-northeast-1.amazonaws.com",
            "http": {
                "method": "POST",
                "path": f"/v1/{kind}",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.24",
                "userAgent": payloads.USER_AGENT,
            },
            "requestId": "bench",
            "routeKey": "ANY /v1/{kind}",
            "stage": "$default",
        },
        "pathParameters": {"kind": kind},
        "body": body.decode("utf-8"),
        "isBase64Encoded": False,
    }


@contextmanager
def _moto_server_with_site() -> Iterator[tuple[str, str]]:
    """A moto server on a free port with the template's tables and one site: (endpoint, write key)."""
    # werkzeug logs every request at INFO, which would bury the table.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        create_tables(client)
        sites = SiteStore(Settings.from_environ().tables.sites, client)
        write_key = sites.add("bench", [payloads.SHOP]).site.write_key
        yield endpoint, write_key
    finally:
        server.stop()


def run_child(
    python: str, mode: str, env: dict[str, str], stdin: str = "", paths: list[str] = FUNCTION_PATHS
) -> dict[str, Any]:
    """One fresh interpreter running _coldstart_child.py in `mode` with `paths` on sys.path; what it
    measured (the `BENCH {...}` line it prints)."""
    result = subprocess.run(
        [python, str(CHILD), mode, *paths],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"cold start child ({mode}, {paths[0]}) failed:\n{result.stdout}\n{result.stderr}")
    measured: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH "))
    if mode == "request" and measured["status"] != 200:
        raise RuntimeError(f"the first request answered {measured['status']}:\n{result.stdout}")
    return measured


def measure(rounds: int = ROUNDS, python: str | None = None) -> Measured:
    """`python` runs the children: this interpreter by default, or e.g. a python3.13 venv holding only
    the Lambda runtime's packages (boto3) and shared/requirements.txt, which is closer to Lambda."""
    python = python or sys.executable
    times: dict[str, list[float]] = {"boto3": [], "init": [], "request": []}
    with _moto_server_with_site() as (endpoint, write_key):
        offline, online = _child_env(NO_AWS), _child_env(endpoint)
        # One untimed run of each warms the OS file cache and writes any missing .pyc files.
        for n in range(rounds + 1):
            for mode in MODES[n % len(MODES) :] + MODES[: n % len(MODES)]:
                first_request = mode == "request"
                measured = run_child(
                    python,
                    mode,
                    online if first_request else offline,
                    _request_event(write_key) if first_request else "",
                )
                if n > 0:
                    times[mode].append(measured["request" if first_request else "import"])
    init_ratio = statistics.median(i / b for i, b in zip(times["init"], times["boto3"], strict=True))
    request_ratio = statistics.median(r / b for r, b in zip(times["request"], times["boto3"], strict=True))
    ms = {mode: statistics.median(values) * 1000 for mode, values in times.items()}
    figures = [
        Figure("cold start: bare import boto3 (median)", ms["boto3"], "ms", digits=0),
        Figure("cold start: collect import + init (median)", ms["init"], "ms", digits=0),
        Figure("cold start: collect import + init / import boto3", init_ratio, aim=("<=", 1.5)),
        Figure("cold start: import + init + first request (median)", ms["request"], "ms", digits=0),
        Figure("cold start: import + init + first request / import boto3", request_ratio),
    ]
    notes = [
        f"cold start: {rounds} rounds of fresh {_version(python)} interpreters, alternating; ratios are "
        "medians of per-round ratios; the first request is a new visitor's track against a local moto server",
    ]
    return Measured(figures, notes)


def _request_event(write_key: str) -> str:
    body = payloads.body(payloads.track(payloads.new_anonymous_id()))
    return json.dumps(http_api_event("track", body, payloads.basic_auth(write_key)))


def _version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import platform; print('Python', platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def compare_functions(
    rounds: int, python: str, functions: tuple[str, ...], env: dict[str, str], label: str
) -> Measured:
    """Fresh interpreters import each of `functions` (functions/<name>/app.py: import and init, as
    Lambda's init phase) alternately with a bare `import boto3`, the order rotating each round after
    one untimed round (OS file cache, .pyc files); each ratio is the median of per-round ratios."""
    kinds: list[str | None] = [None, *functions]
    times: dict[str | None, list[float]] = {k: [] for k in kinds}
    for n in range(rounds + 1):
        order = kinds[n % len(kinds) :] + kinds[: n % len(kinds)]
        for kind in order:
            paths = [str(ROOT / "functions" / kind), str(ROOT / "shared")] if kind else [str(ROOT / "shared")]
            mode = "boto3" if kind is None else "init"
            seconds: float = run_child(python, mode, env, paths=paths)["import"]
            if n > 0:
                times[kind].append(seconds)
    figures = [
        Figure(
            f"cold start: bare import boto3 (median, {label} run)",
            statistics.median(times[None]) * 1000,
            "ms",
            digits=0,
        )
    ]
    for function in functions:
        ratio = statistics.median(f / b for f, b in zip(times[function], times[None], strict=True))
        figures.append(
            Figure(
                f"cold start: {function} import + init (median)",
                statistics.median(times[function]) * 1000,
                "ms",
                digits=0,
            )
        )
        figures.append(Figure(f"cold start: {function} import + init / import boto3", ratio))
    notes = [
        f"{label} cold start: {rounds} rounds of fresh {_version(python)} interpreters (boto3, "
        f"{', '.join(functions)} alternating)"
    ]
    return Measured(figures, notes)
