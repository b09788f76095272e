"""e2e fixtures: one local stack (`cems local` as a child process on free ports) for the session."""

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.identity import IdentityKey, IdentityKind
from cems.line.config import LOCAL_CHANNEL_SECRET
from cems.line.webhook import sign
from cems.local.running import RunningStack, running_local_stack
from cems.models import Channel, ChannelState
from cems.trust import user_hash

ROOT = Path(__file__).parents[2]
# How long a request to the stack may take before it counts as hung. Not a speed test: moving the
# local clock runs every due tick and broadcast in the request, which on a busy machine takes minutes.
HANG = 600


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

    def drain(self) -> int:
        """Runs the stack's pollers (streams, queues, schedules) until idle."""
        request = urllib.request.Request(f"{self.http_url}/_local/drain", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=HANG) as answer:
            delivered: int = json.loads(answer.read())["delivered"]
            return delivered

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


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStackClient]:
    with running_local_stack(cwd=ROOT) as running:
        stack = LocalStackClient(running=running, dynamodb=None)
        stack.dynamodb = stack.client("dynamodb")
        yield stack
