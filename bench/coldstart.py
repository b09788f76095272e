"""(b) Cold starts of the functions, as Lambda runs them, each as a ratio to a bare `import boto3`.

Each function runs in a venv holding only what it has on Lambda (the cems layer's requirements, its
own and the runtime's boto3; see bench.lambda_venv), under Python 3.13 as the template's runtime is
where this machine has it (the notes say which Python ran). The bare `import boto3` runs in the same
venv: in the project venv it also loads awscrt, which Lambda's runtime does not ship, and so would
flatter every ratio. Fresh interpreters of each kind run in turn (the order rotating each round), so
all see the same machine load; each times itself with perf_counter (see _coldstart_child.py). A ratio
is the median of the per-round ratios. `init` is what Lambda's init phase runs: importing app.py,
which builds its clients and services, with the template's environment for that function.
collect's `request` adds its first request (a new visitor's track, against a moto server in this
process), which is what the first user actually waits for.

Bytecode as Lambda has it: the layer ships cems's bytecode (shared/Makefile, which `sam build` runs;
the bench builds cems the same way into a temporary folder) and its dependencies' (there the venv's,
which pip compiled); the function's own folder and the layer are read-only on Lambda, so app.py is
compiled at every start, and the children write no bytecode (PYTHONDONTWRITEBYTECODE). `unbuilt` is
collect as SAM's python3.13 build shipped the layer before: no bytecode anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from cems.adapters.dynamodb.sites import SiteStore
from cems.local.cfn import Template, function_specs
from cems.settings import Settings
from moto.server import ThreadedMotoServer

from bench import lambda_venv, payloads
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, ROOT, TEMPLATE, create_tables

ROUNDS = 13
# Every function of the template; the aims (issue 11) are for the three on a user's path.
FUNCTIONS = (
    "collect",
    "line_webhook",
    "send_line",
    "trigger",
    "tick",
    "broadcast",
    "scenario_loader",
    "send_email",
    "engage",
    "ses_events",
    "admin",
    "console",
)
AIMS = {"collect": 1.5, "line_webhook": 2.0, "send_line": 3.0}
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
            "PYTHONDONTWRITEBYTECODE": "1",  # Lambda's code folders are read-only
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


def function_env(function: str, endpoint: str = NO_AWS) -> dict[str, str]:
    """`function`'s environment as template.yaml declares it (globals and its own variables, queues
    named by URLs where nothing listens), with fake credentials and the variables Lambda itself sets."""
    template = Template.load(TEMPLATE)
    for name in template.resources_of_type("AWS::SQS::Queue"):
        template.refs[name] = f"{NO_AWS}/123456789012/{name}"
    specs = {spec.code_dir.name: spec for spec in function_specs(template)}
    spec = specs[function]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "CEMS_", "PYDANTIC_"))
    }
    env.pop("PYTHONPATH", None)
    env.update(FAKE_AWS_ENV)
    env.update(spec.environment)
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            # Lambda's code folders are read-only: what has no bytecode there compiles at every start.
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec_memory(template, spec.logical_id)),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": "app.lambda_handler",
        }
    )
    return env


def spec_memory(template: Template, logical_id: str) -> int:
    props = template.resources[logical_id].get("Properties", {})
    return int(props.get("MemorySize", template.function_globals().get("MemorySize", 128)))


def _ask(python: str, code: str) -> str:
    """What `code` prints when `python` runs it: the children run other interpreters than the bench's own
    (a Lambda-like venv, or --python), so their version and paths must come from them."""
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


@contextmanager
def built_layer(python: str) -> Iterator[Path]:
    """cems as the layer ships it, built by shared/Makefile's layer-code (as `sam build` runs it) with
    bytecode for `python`, in a temporary folder: yields the folder to put on sys.path."""
    version = _ask(python, "import sys; print('%d.%d' % sys.version_info[:2])")
    with tempfile.TemporaryDirectory(prefix="cems-layer-") as folder:
        dest = Path(folder) / "python"
        subprocess.run(
            [
                *("make", "--no-print-directory", "-s", "layer-code"),
                *(f"DEST={dest}", f"PYTHON={python}", f"RUNTIME_VERSION={version}"),
            ],
            cwd=ROOT / "shared",
            capture_output=True,
            check=True,
            timeout=300,
        )
        yield dest


@contextmanager
def without_bytecode(python: str) -> Iterator[Path]:
    """A copy of `python`'s site-packages with no bytecode, as SAM's python3.13 build unpacks wheels:
    first on sys.path, it stands in for the layer's dependencies before the layer shipped bytecode."""
    found = _ask(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    with tempfile.TemporaryDirectory(prefix="cems-unbuilt-") as folder:
        copy = Path(folder) / "site-packages"
        shutil.copytree(found, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        yield copy


def measure(rounds: int = ROUNDS, python: str | None = None) -> Measured:
    """Every function's import + init beside a bare `import boto3`, each in a venv holding only what
    the function has on Lambda (bench.lambda_venv), under Python 3.13 where this machine has it;
    `python` (bench --python) runs every child instead. Fresh interpreters of each kind run in turn,
    the order rotating each round, after one untimed round (OS file cache, .pyc files); each ratio is
    the median of per-round ratios of a function to the bare import in the same venv and round.
    collect's first request is timed too (a new visitor's track, against a moto server here)."""
    if python is None:
        interpreter = lambda_venv.find_interpreter()
        builder = interpreter.path
        pythons = {function: lambda_venv.python_for(function, interpreter) for function in FUNCTIONS}
        where = (
            f"{interpreter.note}; one venv per function with only the cems layer's requirements, the "
            "function's own and the runtime's boto3 (bench/lambda_venv.py; functions with the same "
            "requirements share one)"
        )
    else:
        pythons = dict.fromkeys(FUNCTIONS, python)
        builder = python
        where = f"{_version(python)} given by --python ({python}), NOT a Lambda-like venv"
    # A kind is (mode, function); the bare import runs once per distinct venv.
    kinds: list[tuple[str, str]] = [("boto3", python_) for python_ in dict.fromkeys(pythons.values())]
    kinds += [("init", function) for function in FUNCTIONS]
    kinds += [("request", "collect"), ("floor", "collect"), ("unbuilt", "collect")]
    times: dict[tuple[str, str], list[float]] = {kind: [] for kind in kinds}
    failed: dict[str, str] = {}
    with (
        _moto_server_with_site() as (endpoint, write_key),
        built_layer(builder) as layer,
        without_bytecode(pythons["collect"]) as unbuilt_packages,
    ):
        offline = {function: function_env(function) for function in FUNCTIONS}
        online = function_env("collect", endpoint)
        for n in range(rounds + 1):
            for kind in kinds[n % len(kinds) :] + kinds[: n % len(kinds)]:
                mode, which = kind
                if mode == "boto3":
                    measured = run_child(which, mode, offline["collect"], paths=[str(layer)])
                elif mode == "floor":
                    measured = run_child(pythons[which], mode, offline[which], paths=[str(layer)])
                elif mode == "unbuilt":
                    unbuilt = [str(ROOT / "functions" / which), str(ROOT / "shared"), str(unbuilt_packages)]
                    measured = run_child(pythons[which], "init", offline[which], paths=unbuilt)
                elif which in failed:
                    continue
                else:
                    try:
                        measured = run_child(
                            pythons[which],
                            mode,
                            online if mode == "request" else offline[which],
                            _request_event(write_key) if mode == "request" else "",
                            paths=[str(ROOT / "functions" / which), str(layer)],
                        )
                    except RuntimeError as error:
                        # The three with aims must start; another that does not is named in the notes
                        # (its own tests say why) rather than hiding every other figure.
                        if which in AIMS:
                            raise
                        failed[which] = str(error).strip().splitlines()[-1]
                        continue
                if n > 0:
                    times[kind].append(measured["request" if mode == "request" else "import"])

    def ratio(kind: tuple[str, str]) -> float:
        bare = times[("boto3", pythons[kind[1]])]
        return statistics.median(t / b for t, b in zip(times[kind], bare, strict=True))

    def ms(kind: tuple[str, str]) -> float:
        return statistics.median(times[kind]) * 1000

    figures = [
        Figure("cold start: bare import boto3 (median)", ms(("boto3", pythons["collect"])), "ms", digits=0)
    ]
    for function in (f for f in FUNCTIONS if f not in failed):
        aim = AIMS.get(function)
        figures.append(
            Figure(f"cold start: {function} import + init (median)", ms(("init", function)), "ms", digits=0)
        )
        figures.append(
            Figure(
                f"cold start: {function} import + init / import boto3",
                ratio(("init", function)),
                aim=None if aim is None else ("<=", aim),
            )
        )
    figures += [
        Figure(
            "cold start: collect import + init + first request (median)",
            ms(("request", "collect")),
            "ms",
            digits=0,
        ),
        Figure(
            "cold start: collect import + init + first request / import boto3", ratio(("request", "collect"))
        ),
        # Context for the aims: a DynamoDB client, Powertools' resolver and one pydantic model, no CEMS
        # code (bench/_coldstart_child.py floor()); no HTTP function that validates with pydantic can
        # start faster than this.
        Figure(
            "cold start: floor (client, Powertools, one pydantic model) / import boto3",
            ratio(("floor", "collect")),
        ),
        # What shared/Makefile's bytecode saves: the layer as SAM's python3.13 build made it.
        Figure(
            "cold start: collect with no bytecode in the layer (before shared/Makefile) / import boto3",
            ratio(("unbuilt", "collect")),
        ),
    ]
    notes = [
        f"cold start: {rounds} rounds of fresh interpreters, each function and a bare import boto3 in "
        f"turn; ratios are medians of per-round ratios; {where}; each function with template.yaml's "
        "environment for it; cems with the bytecode shared/Makefile builds into the layer, the dependencies "
        "with pip's, app.py compiled at each start (Lambda's folders are read-only); collect's first "
        "request is a new visitor's track against a local moto server; "
        f"load average {os.getloadavg()[0]:.1f} when done (ratios on a busy machine run high)",
    ]
    notes += [
        f"cold start: {function} did not start, so it has no figure: {why}"
        for function, why in failed.items()
    ]
    return Measured(figures, notes)


def _request_event(write_key: str) -> str:
    body = payloads.body(payloads.track(payloads.new_anonymous_id()))
    return json.dumps(http_api_event("track", body, payloads.basic_auth(write_key)))


def _version(python: str) -> str:
    return _ask(python, "import platform; print('Python', platform.python_version())")


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


def compare_trees(before: Path, rounds: int = ROUNDS, functions: tuple[str, ...] = tuple(AIMS)) -> str:
    """Each of `functions` from another checkout (`before`: e.g. `git worktree add /tmp/before
    <commit>`) and from this one, alternating with a bare `import boto3`, in the Lambda-like venv
    (the order rotating each round, one untimed round): the two ratios of each, side by side from
    one run, so the machine's load cannot make the difference."""
    interpreter = lambda_venv.find_interpreter()
    python = lambda_venv.python_for(functions[0], interpreter)
    trees = {"before": before, "after": ROOT}
    kinds: list[tuple[str, str]] = [("boto3", "")] + [(tree, f) for f in functions for tree in trees]
    times: dict[tuple[str, str], list[float]] = {kind: [] for kind in kinds}
    envs = {function: function_env(function) for function in functions}
    for n in range(rounds + 1):
        for kind in kinds[n % len(kinds) :] + kinds[: n % len(kinds)]:
            tree, function = kind
            if tree == "boto3":
                measured = run_child(python, "boto3", envs[functions[0]], paths=[str(ROOT / "shared")])
            else:
                root = trees[tree]
                paths = [str(root / "functions" / function), str(root / "shared")]
                measured = run_child(python, "init", envs[function], paths=paths)
            if n > 0:
                times[kind].append(measured["import"])
    bare = times[("boto3", "")]
    lines = [
        f"{interpreter.note}; {rounds} rounds; bare import boto3 {statistics.median(bare) * 1000:.0f} ms"
    ]
    for function in functions:
        ratios = {
            tree: statistics.median(t / b for t, b in zip(times[(tree, function)], bare, strict=True))
            for tree in trees
        }
        lines.append(f"{function}: {ratios['before']:.2f} -> {ratios['after']:.2f} (/ import boto3)")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m bench.coldstart BEFORE_TREE [ROUNDS]: before/after ratios side by side (see compare_trees).
    import sys

    print(compare_trees(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS))
