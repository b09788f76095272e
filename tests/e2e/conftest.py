"""e2e fixtures: one local stack (`cems local` as a child process on free ports) for the session (for
each pytest-xdist worker), waits on conditions with hang bounds, and the log privacy scan."""

import base64
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.identity import IdentityKey, IdentityKind
from cems.line.config import LOCAL_CHANNEL_ACCESS_TOKEN, LOCAL_CHANNEL_SECRET
from cems.line.webhook import sign
from cems.local.running import RunningStack, running_local_stack
from cems.local.runs import wait_for_run
from cems.local.stack import DEFAULT_IDENTITY_SECRET, DEFAULT_SECRET_KEY
from cems.models import Channel, ChannelState
from cems.trust import user_hash

ROOT = Path(__file__).parents[2]
# How long a request to the stack, or a run of due work it started (moving the clock, draining), may
# take before it counts as hung. Not a speed test: on a busy machine a long run takes minutes.
HANG = 600


# Each e2e test's own bound (pytest-timeout): a backstop for a deadlock only, far above HANG, because a
# test chains many waits (a journey moves the clock dozens of times) and each may take minutes on a
# busy machine; the wait that hangs reports what it waited for long before this.
TEST_HANG = HANG * 10
# How often a wait looks again: how soon it notices, never whether it passes.
POLL_SECONDS = 0.1

T = TypeVar("T")


def eventually(probe: Callable[[], T], what: str, hang: float = HANG) -> T:
    """Polls until `probe` returns something truthy and returns it. `hang` only tells a hung stack
    from a slow one: a pass never depends on how busy the machine is."""
    deadline = time.monotonic() + hang
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen after {hang:.0f} s (last: {last!r})")
        time.sleep(POLL_SECONDS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(TEST_HANG))


@dataclass
class LocalStackClient:
    running: RunningStack
    dynamodb: Any

    @property
    def http_url(self) -> str:
        return self.running.http_url

    @property
    def aws_url(self) -> str:
        return self.running.aws_url

    @property
    def write_key(self) -> str:
        """The local site's public write key: what a page's tag sends (believes no userId alone)."""
        return self.running.write_key

    @property
    def secret_key(self) -> str:
        """The local site's secret server key: what the shop's server sends (never with an Origin)."""
        return self.running.secret_key

    @property
    def identity_secret(self) -> str:
        return self.running.identity_secret

    def user_hash(self, user_id: str) -> str:
        """The proof the shop's server renders into the page of a signed-in `user_id` (context.userHash)."""
        return user_hash(self.identity_secret, user_id)

    @property
    def http_port(self) -> int:
        return self.running.http_port

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="ap-northeast-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def run(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        """Starts a run on the stack (`/_local/drain`, `/_local/clock`), which answers at once, and
        waits until the run has ended; its last report."""
        started = self.post(path, document)
        return wait_for_run(self.http_url, started, hang_seconds=HANG)

    def drain(self) -> int:
        """Runs the stack's pollers (streams, queues, schedules) until idle."""
        delivered: int = self.run("/_local/drain", {})["delivered"]
        return delivered

    def advance_clock(self, seconds: float, step_seconds: float | None = None) -> dict[str, Any]:
        """Moves CEMS's clock on the stack by `seconds` (in steps of `step_seconds`, else the stack's
        hour), running the due work after each step; returns once all of it ran."""
        body: dict[str, Any] = {"advance_seconds": seconds}
        if step_seconds is not None:
            body["step_seconds"] = step_seconds
        return self.run("/_local/clock", body)

    def output(self) -> list[str]:
        return list(self.running.output)

    def post(self, path: str, document: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        """POSTs JSON to the stack; the JSON answer. /v1/ paths are sent as the shop's server does:
        Basic auth with `key`, by default the secret server key (so userIds, contact traits and email
        consent count), and no Origin. Pass `key=stack.write_key` to send with the public key."""
        headers = {"Content-Type": "application/json"}
        if path.startswith("/v1/"):
            credential = key or self.secret_key
            headers["Authorization"] = "Basic " + base64.b64encode(f"{credential}:".encode()).decode()
        request = urllib.request.Request(
            f"{self.http_url}{path}", data=json.dumps(document).encode(), method="POST", headers=headers
        )
        with urllib.request.urlopen(request, timeout=HANG) as answer:
            body: dict[str, Any] = json.loads(answer.read())
            return body

    def line_customer(self, user_id: str) -> tuple[str, str]:
        """A shop customer (identified through /v1/identify by the shop's server, with the secret key)
        with a LINE contact and LINE identity, as account linking leaves them: (customer id, LINE user
        id)."""
        customers = CustomerStore("CustomersTable", self.dynamodb)
        self.post("/v1/identify", {"userId": user_id, "traits": {"last_name": "山田"}})
        self.drain()
        customer_id = customers.customer_for_user_id(user_id)
        assert customer_id is not None
        profile = customers.profile(customer_id)
        assert profile is not None
        line_user_id = "U" + uuid.uuid4().hex
        line = ChannelState(reachable=True, consent=True, updated_at=profile.updated_at)
        linked = profile.model_copy(
            update={"line_user_id": line_user_id, "channels": {**profile.channels, Channel.LINE: line}}
        )
        self.dynamodb.put_item(TableName="CustomersTable", Item=customers.profile_item(linked))
        claim = customers.claim_action(
            IdentityKey(IdentityKind.LINE, line_user_id), customer_id, profile.updated_at
        )
        self.dynamodb.transact_write_items(TransactItems=[claim])
        return customer_id, line_user_id

    def line_messages(self) -> list[dict[str, Any]]:
        """Every message the fake LINE API accepted, oldest first."""
        with urllib.request.urlopen(f"{self.http_url}/_local/line/messages", timeout=10) as answer:
            messages: list[dict[str, Any]] = json.loads(answer.read())["messages"]
            return messages

    def now(self) -> datetime:
        """CEMS's clock on the stack (tests move it)."""
        with urllib.request.urlopen(f"{self.http_url}/_local/clock", timeout=10) as answer:
            return datetime.fromisoformat(json.loads(answer.read())["now"])

    def postback(self, line_user_id: str, data: str) -> None:
        """A postback from this LINE user, signed with the local channel secret, at CEMS's time."""
        body = {
            "destination": "U0f3c9a7e21b84d6c5a09e8f7d6c5b4a3",
            "events": [
                {
                    "type": "postback",
                    "timestamp": int(self.now().timestamp() * 1000),
                    "source": {"type": "user", "userId": line_user_id},
                    "mode": "active",
                    "webhookEventId": uuid.uuid4().hex.upper()[:26],
                    "deliveryContext": {"isRedelivery": False},
                    "replyToken": uuid.uuid4().hex,
                    "postback": {"data": data},
                }
            ],
        }
        raw = json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.http_url}/line/webhook",
            data=raw,
            method="POST",
            headers={"Content-Type": "application/json", "X-Line-Signature": sign(raw, LOCAL_CHANNEL_SECRET)},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


@contextmanager
def started_stack() -> Iterator[LocalStackClient]:
    """A local stack of its own (free ports: one per xdist worker, and one more per module that
    needs to be alone), stopped on exit."""
    with running_local_stack(cwd=ROOT) as running:
        stack = LocalStackClient(running=running, dynamodb=None)
        stack.dynamodb = stack.client("dynamodb")
        yield stack


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStackClient]:
    """The stack the e2e modules share. Under pytest-xdist each worker has its own, and a module's
    tests stay on one worker (--dist loadfile), so what a module sets up is there for its tests."""
    with started_stack() as stack:
        yield stack
        # Every flow the modules on this stack drove (broadcasts, journeys, opt-in links, the demo
        # shop, LINE linking, ...) printed here: none of it may carry what a log must never hold.
        found = privacy_findings(stack)
        assert not found, "\n".join(found[:20])


EMAIL_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
LINE_USER_ID = re.compile(r"\bU[0-9a-f]{32}\b")
# Click, open, unsubscribe and confirm links carry a signed token after /r/, /o/, /u/ or /c/; a LINE
# text's short link a 16-character code after /r/, as good as the link.
TRACKING_PATH = re.compile(r"/[rouc]/[A-Za-z0-9_-]{16,}")
SECRETS = (
    LOCAL_CHANNEL_ACCESS_TOKEN,
    LOCAL_CHANNEL_SECRET,
    LOCAL_TRACKING_SECRET,
    DEFAULT_SECRET_KEY,
    DEFAULT_IDENTITY_SECRET,
)


def privacy_findings(stack: LocalStackClient) -> list[str]:
    """The lines the stack printed (its functions' logs included) that hold an email address, a LINE
    user id, a tracking token or a secret: what no log line may hold."""
    # And the ones this stack holds, should CEMS_SECRET_KEY / CEMS_IDENTITY_SECRET have chosen others.
    secrets = (*SECRETS, stack.secret_key, stack.identity_secret)
    found = []
    for number, line in enumerate(list(stack.running.transcript), 1):
        reasons = [
            name
            for name, hit in (
                ("email address", EMAIL_ADDRESS.search(line)),
                ("LINE user id", LINE_USER_ID.search(line)),
                ("tracking token", TRACKING_PATH.search(line)),
                ("secret", any(secret in line for secret in secrets)),
            )
            if hit
        ]
        if reasons:
            found.append(f"line {number} ({', '.join(reasons)}): {line[:300]}")
    return found
