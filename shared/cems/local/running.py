"""Starts `cems local` as a child process on free ports, for tests and benchmarks."""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cems.local.stack import DEFAULT_IDENTITY_SECRET, DEFAULT_SECRET_KEY

READY = re.compile(r"ready: api=(?P<api>\S+) demo=\S+ aws=(?P<aws>\S+) write_key=(?P<key>\S+)")


@dataclass(frozen=True)
class RunningStack:
    http_url: str
    aws_url: str
    write_key: str  # the local site's public write key (the tag's), from the ready line
    output: collections.deque[str]  # the latest lines, for error messages
    # Every line the stack printed (its functions' logs included), for checks over a whole run.
    transcript: list[str] = field(default_factory=list)
    # The local site's secret server key and identity secret. The stack never prints them: they are
    # what it was started with (--secret-key / CEMS_SECRET_KEY, else the documented local default).
    secret_key: str = DEFAULT_SECRET_KEY
    identity_secret: str = DEFAULT_IDENTITY_SECRET

    @property
    def http_port(self) -> int:
        return int(self.http_url.rsplit(":", 1)[1])


def _setting(args: list[str], flag: str, env: dict[str, str], name: str, default: str) -> str:
    """A `cems local` option as the stack reads it: the flag (last one wins), else the variable, else
    the default (see cems.local.stack.parse_options)."""
    value = env.get(name, default)
    for n, arg in enumerate(args):
        if arg == flag and n + 1 < len(args):
            value = args[n + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_local_stack(
    http_port: int = 0,
    aws_port: int = 0,
    *,
    args: list[str] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> Iterator[RunningStack]:
    """Yields once the stack printed its ready line; stops it (SIGTERM, then kill) on exit. `timeout`
    only tells a stack that cannot start from a slow start: under load (several stacks, one per test
    worker, on a busy machine) start-up has taken over 40 s."""
    child_env = {
        **os.environ,
        "CEMS_HTTP_PORT": str(http_port or free_port()),
        "CEMS_AWS_PORT": str(aws_port or free_port()),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "cems", "local", *(args or [])],
        cwd=cwd,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: collections.deque[str] = collections.deque(maxlen=2000)
    transcript: list[str] = []
    ready = threading.Event()
    found: dict[str, str] = {}

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            transcript.append(line.rstrip("\n"))
            match = READY.search(line)
            if match and not ready.is_set():
                found.update(match.groupdict())
                ready.set()

    reader = threading.Thread(target=read_output, name="local-stack-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local stack did not become ready:\n" + "\n".join(list(output)[-40:]))
        yield RunningStack(
            found["api"],
            found["aws"],
            found["key"],
            output,
            transcript,
            secret_key=_setting(args or [], "--secret-key", child_env, "CEMS_SECRET_KEY", DEFAULT_SECRET_KEY),
            identity_secret=_setting(
                args or [], "--identity-secret", child_env, "CEMS_IDENTITY_SECRET", DEFAULT_IDENTITY_SECRET
            ),
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=2)
