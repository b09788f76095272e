"""Runs the template's Lambda functions in this process, the way Lambda runs them.

Each function module is imported once per "execution environment", and one environment serves one
invocation at a time, as in Lambda: Powertools' resolvers keep the current event on the app object,
so two concurrent requests must never share one. Up to `concurrency` environments are kept per
function; a request waits for a free one.

Unlike Lambda's, these environments share one process, and so Python's logging: every function's
Powertools Logger (one service name, the template's) is one logging.Logger with one formatter, to
which `inject_lambda_context` appends the invocation's function name and request id for every
thread. Each invocation therefore also sets them as its own context's keys (see `LocalFunction.invoke`).
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from aws_lambda_powertools.logging.formatter import set_context_keys
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model

from cems.local.cfn import ACCOUNT_ID, REGION, FunctionSpec

log = logging.getLogger("cems.local")


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools and our handlers read."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    deadline_ms: int
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


class LocalFunction:
    def __init__(self, spec: FunctionSpec, concurrency: int = 4) -> None:
        self.spec = spec
        self._idle: queue.LifoQueue[Callable[[dict[str, Any], Any], Any]] = queue.LifoQueue()
        self._created = 0
        self._concurrency = concurrency
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.logical_id

    def warm(self) -> None:
        """Import one environment now, so a broken function fails the stack at start, not on use."""
        self._idle.put(self._new_environment())

    def _new_environment(self) -> Callable[[dict[str, Any], Any], Any]:
        with self._lock:
            self._created += 1
            module_name = f"cems_local_{self.name}_{self._created}"
        module = _import_file(module_name, self.spec)
        handler: Callable[[dict[str, Any], Any], Any] = getattr(module, self.spec.handler_name)
        return handler

    def _acquire(self) -> Callable[[dict[str, Any], Any], Any]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            may_create = self._created < self._concurrency
        if may_create:
            return self._new_environment()
        return self._idle.get()

    def invoke(self, event: dict[str, Any]) -> Any:
        handler = self._acquire()
        context = LambdaContext(
            function_name=self.name,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}",
            aws_request_id=str(uuid.uuid4()),
            deadline_ms=int(time.time() * 1000) + self.spec.timeout * 1000,
        )
        try:
            # In a context of its own: the keys set there are this invocation's alone.
            return contextvars.copy_context().run(_run_logged_as, handler, event, context)
        finally:
            self._idle.put(handler)


def _run_logged_as(handler: Callable[[dict[str, Any], Any], Any], event: dict[str, Any], context: Any) -> Any:
    """Runs `handler` with the invocation's Lambda context keys (those `inject_lambda_context` adds)
    as Powertools' thread-safe keys, which a log line takes over the formatter's shared ones: without
    them, a line logged while another function's invocation is under way in another thread (a poller's
    beside a request's) would carry that function's name and request id, as the shared formatter last
    had them, and say the function that wrote it never logged."""
    set_context_keys(**build_lambda_context_model(context).__dict__)
    return handler(event, context)


def _import_file(module_name: str, spec: FunctionSpec) -> ModuleType:
    # Each function's folder holds its own `app.py`; importing by file under a unique module name keeps
    # two functions (or two environments of one function) from sharing module state.
    code_dir = str(spec.code_dir)
    if code_dir not in sys.path:
        sys.path.append(code_dir)
    module_spec = importlib.util.spec_from_file_location(module_name, spec.module_file)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {spec.module_file} for {spec.logical_id}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    return module
