"""e2e fixtures: one local stack (`cems local` as a child process on free ports) for the session."""

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems.local.running import RunningStack, running_local_stack

ROOT = Path(__file__).parents[2]


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
        return self.running.write_key

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
        with urllib.request.urlopen(request, timeout=60) as answer:
            delivered: int = json.loads(answer.read())["delivered"]
            return delivered

    def output(self) -> list[str]:
        return list(self.running.output)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStackClient]:
    with running_local_stack(cwd=ROOT) as running:
        stack = LocalStackClient(running=running, dynamodb=None)
        stack.dynamodb = stack.client("dynamodb")
        yield stack
