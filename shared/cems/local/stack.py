"""`cems local`: the whole system on one machine, with moto in server mode as AWS.

Start-up, in order: moto server (a child process, so AWS and the functions use both cores) ->
tables, queues and buckets from template.yaml -> the local site and write key -> the functions
(imported once, so a broken one fails here) -> pollers for their schedules, streams, queues and
buckets -> the HTTP server routing the template's HttpApi events. One line containing `ready` is
printed when it serves.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cems import clock
from cems.line.config import LineSettings
from cems.local.cfn import REGION, Template, function_specs
from cems.local.fake_line import FAKE_LINE_PREFIX, FakeLine
from cems.local.fake_line_login import ACCOUNT_LINK_PATH, account_link_routes
from cems.local.functions import LocalFunction
from cems.local.http import (
    ApiGateway,
    LocalHttpServer,
    LocalRequest,
    LocalResponse,
    LocalRoute,
    http_api_routes,
)
from cems.local.jwt_authorizer import jwt_authorizers
from cems.local.local_ses import LocalSes
from cems.local.pollers import Poller, build_pollers, sns_subscribers
from cems.local.resources import LOCAL_CREDENTIALS, create_resources, local_client
from cems.local.runs import MAX_WAIT_SECONDS, RUNS_PATH, Run, Runs, wait_for_run
from cems.settings import Settings
from cems.trust import user_hash

log = logging.getLogger("cems.local")

# The local clock moves at most this far between runs of the due work.
DEFAULT_CLOCK_STEP_SECONDS = 3600.0


class ClockAdvance(BaseModel):
    """`POST /_local/clock`: how far to move CEMS's clock."""

    model_config = ConfigDict(extra="forbid")

    advance_seconds: float = Field(ge=0, le=400 * 86400)
    step_seconds: float = Field(default=DEFAULT_CLOCK_STEP_SECONDS, ge=60, le=86400)


DEFAULT_WRITE_KEY = "local-write-key"
# The local site's secret server key and identity secret: documented, public local defaults (a
# deployed site gets random ones from `cems site add`). Never printed: the stack's output is checked
# for secrets (tests/e2e/test_log_privacy.py).
DEFAULT_SECRET_KEY = "sk_local-secret-key"  # noqa: S105 - the documented local default
DEFAULT_IDENTITY_SECRET = "local-identity-secret"  # noqa: S105 - the documented local default
LOCAL_SITE_NAME = "local-demo"


def default_template() -> Path:
    """template.yaml in the working directory, else the one beside this (editable) checkout."""
    here = Path.cwd() / "template.yaml"
    if here.exists():
        return here
    return Path(__file__).resolve().parents[3] / "template.yaml"


@dataclass
class StackOptions:
    http_port: int = 3000
    aws_port: int = 4566
    host: str = "127.0.0.1"
    write_key: str = DEFAULT_WRITE_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    identity_secret: str = DEFAULT_IDENTITY_SECRET
    template: Path = field(default_factory=default_template)
    extra_origins: list[str] = field(default_factory=list)


class MotoServer:
    """moto in server mode, as a child process that ends with the stack."""

    def __init__(self, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"
        if _port_in_use(host, port):
            raise SystemExit(
                f"error: port {port} is in use; stop what runs there or set CEMS_AWS_PORT "
                f"(エラー: ポート {port} は使用中です)"
            )
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "cems.local.moto_server", "-H", host, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_end_with_parent,
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 120.0) -> None:
        # A hang bound: on a busy machine moto's imports alone take many seconds.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: moto server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):  # noqa: S310 - local URL
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"error: moto server did not start within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _end_with_parent() -> None:
    """Linux: the moto server gets SIGTERM if the stack dies without cleaning up (kill -9)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.http_url = f"http://{options.host}:{options.http_port}"
        self.template = Template.load(options.template)
        self.functions: dict[str, LocalFunction] = {}
        self.pollers: list[Poller] = []
        self.created: list[str] = []
        self._moto: MotoServer | None = None
        self._server: LocalHttpServer | None = None
        self._stop = threading.Event()
        self._serving = False
        self._clock_lock = threading.Lock()
        # Moving the clock and draining can outlast any HTTP time-out: they run as watched runs.
        self.runs = Runs()
        self._threads: list[threading.Thread] = []
        self.fake_line: FakeLine | None = None
        self.local_ses: LocalSes | None = None

    @property
    def aws_url(self) -> str:
        return self._moto.url if self._moto else f"http://{self.options.host}:{self.options.aws_port}"

    def start(self) -> None:
        self._server = self._bind()
        self._moto = MotoServer(self.options.host, self.options.aws_port)
        self._aws_environment()
        self._line_environment()
        # Click, open and unsubscribe links point at this stack.
        os.environ.setdefault("ENGAGE_BASE_URL", self.http_url)
        self.created = create_resources(self.template, self.aws_url)
        self._functions_environment()
        self._verify_sender()
        self._seed_site()
        for spec in function_specs(self.template):
            function = LocalFunction(spec)
            function.warm()
            self.functions[spec.logical_id] = function
        self.pollers = build_pollers(self.template, self.functions, self.aws_url)
        self._server.gateway = ApiGateway(
            http_api_routes(self.template, self.functions),
            self.local_routes(),
            jwt_authorizers(self.template, self.aws_url),
        )
        for poller in self.pollers:
            self._spawn(f"poller {poller.description}", lambda p=poller: p.run(self._stop))
        self._spawn("http", self._server.serve_forever)
        self._serving = True

    def _bind(self) -> LocalHttpServer:
        # Bound first, so a taken port is reported before anything else starts.
        try:
            server = LocalHttpServer((self.options.host, self.options.http_port), ApiGateway([], []))
        except OSError as exc:
            raise SystemExit(
                f"error: cannot listen on port {self.options.http_port} ({exc.strerror}); set CEMS_HTTP_PORT "
                f"(エラー: ポート {self.options.http_port} を使えません)"
            ) from exc
        self.options.http_port = server.server_address[1]
        self.http_url = f"http://{self.options.host}:{self.options.http_port}"
        return server

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _aws_environment(self) -> None:
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.aws_url,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
                "CEMS_LOCAL": "1",
                "CEMS_HTTP_URL": self.http_url,
                # Metrics go to CloudWatch in the cloud; locally they would only be noise on stdout.
                "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "true"),
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )

    def _line_environment(self) -> None:
        """LINE calls go to the fake LINE API this stack serves (`/_fake_line`), unless
        CEMS_LINE_API_URL names another; the link page is the demo shop's."""
        api_url = os.environ.get("CEMS_LINE_API_URL") or f"{self.http_url}{FAKE_LINE_PREFIX}"
        link_page = (
            os.environ.get("CEMS_LINE_LINK_PAGE_URL")
            or f"http://localhost:{self.options.http_port}/demo/line-link.html"
        )
        self.template.parameter_overrides.setdefault("LineApiUrl", api_url)
        self.template.parameter_overrides.setdefault("LineLinkPageUrl", link_page)
        os.environ["CEMS_LINE_API_URL"] = api_url
        os.environ["CEMS_LINE_LINK_PAGE_URL"] = link_page
        os.environ.setdefault("CEMS_LINE_ACCOUNT_LINK_URL", f"{self.http_url}{ACCOUNT_LINK_PATH}")
        self.fake_line = FakeLine(lambda: Settings.from_environ().area(LineSettings).channel_access_token())

    def _functions_environment(self) -> None:
        # The functions share this process, so their variables share one environment; a name two
        # functions set differently would be a template smell, reported rather than silently lost.
        seen: dict[str, str] = {}
        for spec in function_specs(self.template):
            for name, value in spec.environment.items():
                if name in seen and seen[name] != value:
                    log.warning(
                        "environment variable %s differs between functions; using %r", name, seen[name]
                    )
                    continue
                seen[name] = value
        for name, value in seen.items():
            os.environ.setdefault(name, value)

    def _verify_sender(self) -> None:
        """The sender address as a verified SES identity (moto refuses mail from any other), as an
        operator verifies the shop's domain in SES before deploying."""
        sender = os.environ.get("EMAIL_FROM_ADDRESS")
        if not sender:
            return
        sesv2 = local_client("sesv2", self.aws_url)
        with contextlib.suppress(sesv2.exceptions.AlreadyExistsException):
            sesv2.create_email_identity(EmailIdentity=sender)
        self.local_ses = LocalSes(self.aws_url, self._deliver_ses_event)

    def _deliver_ses_event(self, event: dict[str, Any]) -> list[Any]:
        """Invokes each function subscribed (an SNS event) to a topic, as SNS would: asynchronously,
        so its EventInvokeConfig retries apply and what it gives up on goes to its OnFailure queue."""
        subscribers = sns_subscribers(self.template, self.functions, self.aws_url)
        outcomes = [subscriber.invoke(event) for subscriber in subscribers]
        return [o.result if o.succeeded else {"failed": "kept on its OnFailure queue"} for o in outcomes]

    def _seed_site(self) -> None:
        """The local write key, allowed from the stack's own origins (the demo shop)."""
        from cems.adapters.dynamodb.sites import SiteStore

        if "SitesTable" not in self.template.resources:
            return
        origins = [
            f"http://localhost:{self.options.http_port}",
            f"http://127.0.0.1:{self.options.http_port}",
            *self.options.extra_origins,
        ]
        sites_table = self.template.refs.get("SitesTable", "SitesTable")
        SiteStore(sites_table, local_client("dynamodb", self.aws_url)).add(
            LOCAL_SITE_NAME,
            origins,
            self.options.write_key,
            secret_key=self.options.secret_key,
            identity_secret=self.options.identity_secret,
        )

    # --- routes the local stack serves itself ---

    def local_routes(self) -> list[LocalRoute]:
        return [
            LocalRoute("GET", r"/demo/?", lambda r, _: self._demo_page("index.html", r)),
            LocalRoute("GET", r"/demo/(?P<page>[\w-]+\.html)", lambda r, p: self._demo_page(p["page"], r)),
            LocalRoute("POST", r"/demo/login", self._demo_login),
            LocalRoute("POST", r"/demo/logout", self._demo_logout),
            LocalRoute("GET", r"/_local/?", self._overview),
            LocalRoute("POST", r"/_local/drain", self._drain),
            LocalRoute("GET", r"/_local/clock", self._clock),
            LocalRoute("POST", r"/_local/clock", self._clock),
            LocalRoute("GET", RUNS_PATH + r"/?", self._runs),
            LocalRoute("GET", RUNS_PATH + r"/(?P<run>[\w-]+)", self._run_status),
            *(self.fake_line.routes() if self.fake_line is not None else []),
            *(self.local_ses.routes() if self.local_ses is not None else []),
            *account_link_routes(self.fake_line, self.http_url),
        ]

    def _demo_page(self, page: str, request: LocalRequest) -> LocalResponse:
        demo = resources.files("cems.local").joinpath("demo")
        target = demo.joinpath(page)
        if not target.is_file():
            return LocalResponse.json(404, {"error": "not_found", "message": f"no demo page {page}"})
        # As a real shop's server does for a signed-in customer: the user id and its user hash
        # (HMAC-SHA256 under the site's identity secret) rendered into the tag's attributes.
        user_id = _demo_user(request)
        user_attributes = (
            f' data-user-id="{html.escape(user_id)}"'
            f' data-user-hash="{user_hash(self.options.identity_secret, user_id)}"'
            if user_id
            else ""
        )
        text = (
            target.read_text(encoding="utf-8")
            .replace("__CEMS_ENDPOINT__", self.http_url)
            .replace("__CEMS_WRITE_KEY__", self.options.write_key)
            .replace("__CEMS_USER_ATTRIBUTES__", user_attributes)
        )
        return LocalResponse(200, text.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})

    def _demo_login(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        """The demo shop's sign-in: `{"userId"}` -> a session cookie, and the user hash the page needs
        for `cems.identify(userId, traits, {userHash})` right away (later pages render it)."""
        try:
            user_id = json.loads(request.body or b"{}").get("userId")
        except (ValueError, AttributeError):
            user_id = None
        if not isinstance(user_id, str) or not re.fullmatch(r"[\w.:@+-]{1,100}", user_id):
            return LocalResponse.json(400, {"error": "invalid_user", "field": "userId"})
        answer = LocalResponse.json(
            200, {"userId": user_id, "userHash": user_hash(self.options.identity_secret, user_id)}
        )
        answer.cookies.append(f"{DEMO_USER_COOKIE}={user_id}; Path=/demo; SameSite=Lax; HttpOnly")
        return answer

    def _demo_logout(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        answer = LocalResponse.json(200, {"success": True})
        answer.cookies.append(f"{DEMO_USER_COOKIE}=; Path=/demo; Max-Age=0")
        return answer

    def _overview(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        assert self._server is not None
        return LocalResponse.json(
            200,
            {
                "api": self.http_url,
                "aws": self.aws_url,
                "demo": f"http://localhost:{self.options.http_port}/demo",
                "write_key": self.options.write_key,
                "resources": self.created,
                "functions": sorted(self.functions),
                "routes": [f"{r.route_key} -> {r.function.name}" for r in self._server.gateway.routes],
                "pollers": [p.description for p in self.pollers],
                "line": {
                    "api": os.environ.get("CEMS_LINE_API_URL"),
                    "messages": f"{self.http_url}/_local/line",
                },
                "email": {
                    "sent": f"{self.http_url}/_local/email",
                    "feedback": f"POST {self.http_url}/_local/ses/<bounce|complaint|delivery> with a 'to'",
                },
            },
        )

    def _drain(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        """Starts a run of every poller until idle; answers 202 with the run to watch."""

        def work(run: Run) -> None:
            with run.lock:
                run.state = "running"
            run.progress(steps_done=1, delivered=self.drain())

        run = self.runs.start("drain", {}, work, steps=1)
        return LocalResponse.json(202, run.view())

    def _runs(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        return LocalResponse.json(200, {"runs": [run.view() for run in self.runs.all()]})

    def _run_status(self, request: LocalRequest, found: dict[str, str]) -> LocalResponse:
        """A run's progress; `?wait=N` holds the answer until the run ends or N seconds pass."""
        run = self.runs.get(found["run"])
        if run is None:
            return LocalResponse.json(404, {"error": "no_such_run", "run": found["run"]})
        query = dict(parse_qsl(request.query))
        try:
            wait = min(max(float(query.get("wait", "0")), 0.0), MAX_WAIT_SECONDS)
        except ValueError:
            return LocalResponse.json(
                400, {"error": "invalid_wait", "message": "wait is a number of seconds"}
            )
        run.ended.wait(wait)
        return LocalResponse.json(200, run.view())

    def _clock(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        if request.method == "GET":
            return LocalResponse.json(200, {"now": clock.iso(clock.now())})
        try:
            body = json.loads(request.body or b"{}")
            advance = ClockAdvance.model_validate(body)
        except (ValueError, ValidationError) as exc:
            return LocalResponse.json(
                400,
                {
                    "success": False,
                    "error": "invalid_clock_request",
                    "message": 'send {"advance_seconds": N} with 0 <= N <= 34560000 (400 days)',
                    "detail": str(exc).splitlines()[0],
                },
            )
        # Answered at once: the due work of a long advance can take minutes on a busy machine.
        run = self.runs.start(
            "clock",
            advance.model_dump(),
            lambda run: self.advance_clock(advance.advance_seconds, advance.step_seconds, run),
            steps=max(1, math.ceil(advance.advance_seconds / advance.step_seconds)),
        )
        return LocalResponse.json(202, run.view())

    def advance_clock(
        self, seconds: float, step_seconds: float = DEFAULT_CLOCK_STEP_SECONDS, run: Run | None = None
    ) -> dict[str, Any]:
        """Moves CEMS's clock forward in steps, running the due work (schedules, streams, queues) after
        each, so work that falls due on day 3 runs on day 3 and not all at once on day 30. Reports
        each step to `run`, if given. Runs one at a time: a second waits for the first."""
        with self._clock_lock:
            if run is not None:
                with run.lock:
                    run.state = "running"
            remaining, steps, delivered = float(seconds), 0, 0
            while remaining > 0:
                step = min(step_seconds, remaining)
                clock.advance(step)
                remaining -= step
                steps += 1
                drained = self.drain()
                delivered += drained
                if run is not None:
                    run.progress(steps_done=steps, delivered=drained)
            if steps == 0:
                delivered = self.drain()
                if run is not None:
                    run.progress(steps_done=1, delivered=delivered)
            return {"now": clock.iso(clock.now()), "steps": steps, "delivered": delivered}

    def drain(self) -> int:
        """Runs every poller until idle, so tests see the effects of what they sent."""
        total = 0
        for _ in range(10):
            delivered = sum(p.drain() for p in self.pollers)
            total += delivered
            if not delivered:
                break
        return total

    def ready_line(self) -> str:
        return (
            f"CEMS local stack ready: api={self.http_url} "
            f"demo=http://localhost:{self.options.http_port}/demo "
            f"aws={self.aws_url} write_key={self.options.write_key}"
        )

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            if self._serving:
                self._server.shutdown()
            self._server.server_close()
        if self._moto is not None:
            self._moto.stop()


DEMO_USER_COOKIE = "demo_user"


def _demo_user(request: LocalRequest) -> str | None:
    """The demo shop's signed-in customer (its session cookie), if any."""
    cookies = SimpleCookie()
    try:
        cookies.load(request.headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = cookies.get(DEMO_USER_COOKIE)
    value = morsel.value if morsel is not None else ""
    return value if re.fullmatch(r"[\w.:@+-]{1,100}", value) else None


def parse_options(argv: list[str]) -> tuple[StackOptions, bool]:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="cems local", description="run CEMS locally / CEMS をローカルで起動"
    )
    parser.add_argument("--http-port", type=int, default=int(env.get("CEMS_HTTP_PORT", "3000")))
    parser.add_argument("--aws-port", type=int, default=int(env.get("CEMS_AWS_PORT", "4566")))
    parser.add_argument("--write-key", default=env.get("CEMS_WRITE_KEY", DEFAULT_WRITE_KEY))
    parser.add_argument("--secret-key", default=env.get("CEMS_SECRET_KEY", DEFAULT_SECRET_KEY))
    parser.add_argument("--identity-secret", default=env.get("CEMS_IDENTITY_SECRET", DEFAULT_IDENTITY_SECRET))
    parser.add_argument("--template", type=Path, default=default_template())
    parser.add_argument(
        "--origin", action="append", default=[], help="another browser origin allowed for the local write key"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    options = StackOptions(
        http_port=args.http_port,
        aws_port=args.aws_port,
        write_key=args.write_key,
        secret_key=args.secret_key,
        identity_secret=args.identity_secret,
        template=args.template,
        extra_origins=args.origin,
    )
    return options, args.verbose


_DURATION = re.compile(r"\+?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_advance(text: str) -> float:
    """`+3d`, `+1d12h`, `90m`, `30s` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration like +3d, +1d12h, +90m or +30s")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def clock_command(argv: list[str]) -> int:
    """`cems local clock [+3d]`: shows or advances the running local stack's clock."""
    parser = argparse.ArgumentParser(
        prog="cems local clock", description="move the local clock / 時計を進める"
    )
    parser.add_argument("advance", nargs="?", help="how far to move it: +3d, +1d12h, +90m, +30s")
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('CEMS_HTTP_PORT', '3000')}")
    args = parser.parse_args(argv)
    if args.advance is None:
        request = urllib.request.Request(f"{args.url}/_local/clock")  # noqa: S310 - the local stack's own URL
    else:
        try:
            seconds = parse_advance(args.advance)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        body = json.dumps({"advance_seconds": seconds}).encode()
        request = urllib.request.Request(  # noqa: S310 - the local stack's own URL
            f"{args.url}/_local/clock", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the local stack's URL
            reply = json.loads(answer.read())
    except OSError as exc:
        print(f"error: is the local stack running at {args.url}? ({exc})", file=sys.stderr)
        return 1
    if args.advance is not None:
        # The stack answered at once with a run; its steps can take minutes on a busy machine.
        def show(status: dict[str, Any]) -> None:
            print(
                f"step {status['steps_done']}/{status['steps']} now={status['now']} "
                f"delivered={status['delivered']} ({status['state']})",
                file=sys.stderr,
            )

        try:
            reply = wait_for_run(args.url, reply, on_progress=show)
        except (OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(reply, ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if argv[:1] == ["clock"]:
        return clock_command(argv[1:])
    options, verbose = parse_options(argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stack = LocalStack(options)
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    try:
        # Until it serves, Ctrl-C interrupts start-up as usual; from then on it stops the loop below.
        stack.start()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(stack.ready_line(), flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        stack.stop()
        print("CEMS local stack stopped", flush=True)
    return 0
