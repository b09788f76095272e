"""The LINE Messaging API client (line-bot-sdk v3), built with CEMS's host, token and time-out.

Why there is an import shim here
--------------------------------
line-bot-sdk's package ``__init__`` files import far more than a function uses:
``linebot/__init__.py`` loads the legacy v2 SDK (requests, aiohttp, deprecated), ``linebot/v3``
loads the webhook parser and every webhook model, and ``linebot/v3/messaging`` loads the sync and
async APIs (aiohttp again) and all ~200 models. Importing any submodule, say
``linebot.v3.messaging.api.messaging_api``, runs all of those parents first: about 0.7 s on the
development machine, four times a bare ``import boto3``, on every Lambda cold start.

``lazy_linebot_packages()`` installs those packages through ``cems.lazy_packages``: in ``sys.modules``
*without running their ``__init__``*, so only the submodules actually used are loaded, and a name the
``__init__`` would have defined is resolved on first access (``linebot.v3.messaging.models.TextMessage``,
which the SDK's own discriminated ``from_dict`` looks up), or by running the real ``__init__``, so any
other code in the process (the local stack runs every function in one)
sees the complete package. Behaviour is the SDK's; only the order of imports changes.
``tests/unit/test_line_sender.py`` checks both paths. If the packages are already imported, the
shim does nothing.

``MessagingApi`` itself is the other cost: each of its ~140 methods is decorated with pydantic v1's
``validate_arguments``, which builds a model of the method's arguments when the class is defined,
about two thirds of a bare ``import boto3`` at every send_line cold start, for the two or three
methods CEMS calls. ``import_messaging_api()`` imports the module with a ``validate_arguments``
that builds the very same validator on the method's first call instead (`_validated_on_first_call`):
every call is still validated by pydantic, with the same errors; only when the model is built moves.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cems import lazy_packages
from cems.lazy_packages import is_lazy
from cems.line.config import LINE_REQUEST_TIMEOUT, LineSettings

if TYPE_CHECKING:
    from linebot.v3.messaging.api.messaging_api import (  # type: ignore[import-untyped,unused-ignore]
        MessagingApi,
    )

# Parents first: a child's spec is found through its parent's __path__.
LAZY_PACKAGES = (
    "linebot",
    "linebot.v3",
    "linebot.v3.messaging",
    "linebot.v3.messaging.api",
    "linebot.v3.messaging.models",
)
_lock = lazy_packages.lock


def lazy_linebot_packages() -> None:
    """Install the lazy line-bot-sdk packages, unless line-bot-sdk is imported already."""
    lazy_packages.install(LAZY_PACKAGES)


lazy_linebot_packages()

# What sending needs besides the client: small modules, loaded through the lazy packages above.
from linebot.v3.messaging.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]  # noqa: E402
from linebot.v3.messaging.models.multicast_request import (  # type: ignore[import-untyped,unused-ignore]  # noqa: E402
    MulticastRequest,
)
from linebot.v3.messaging.models.push_message_request import (  # type: ignore[import-untyped,unused-ignore]  # noqa: E402
    PushMessageRequest,
)

MESSAGING_API_MODULE = "linebot.v3.messaging.api.messaging_api"


def _validated_on_first_call(validate_arguments: Callable[..., Any]) -> Callable[..., Any]:
    """pydantic v1's `validate_arguments`, building each function's validator on its first call."""

    def decorator(function: Callable[..., Any] | None = None, *, config: Any = None) -> Any:
        def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
            validated: Callable[..., Any] | None = None

            @functools.wraps(function)
            def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal validated
                if validated is None:  # two threads may both build it: the same validator, harmless
                    validated = validate_arguments(function, config=config)
                return validated(*args, **kwargs)

            return call

        return wrap if function is None else wrap(function)

    return decorator


def import_messaging_api() -> ModuleType:
    """The SDK's messaging_api module, its methods' argument validators built on first call (see
    the module docstring); the module as it is if something imported it already."""
    with _lock:
        if MESSAGING_API_MODULE in sys.modules:
            return sys.modules[MESSAGING_API_MODULE]
        import pydantic.v1

        eager = pydantic.v1.validate_arguments
        # Only while the module runs its `from pydantic.v1 import validate_arguments`.
        pydantic.v1.validate_arguments = _validated_on_first_call(eager)
        try:
            return importlib.import_module(MESSAGING_API_MODULE)
        finally:
            pydantic.v1.validate_arguments = eager


def load_client_modules() -> None:
    """Import MessagingApi and its client now (a function's init), without reading the token."""
    import_messaging_api()
    from linebot.v3.messaging.api_client import ApiClient  # type: ignore[import-untyped,unused-ignore]  # noqa: F401


def message_from_dict(message: dict[str, Any]) -> Any:
    """The SDK's Message.from_dict: the message's own model (TextMessage, FlexMessage, ...), validated.

    Raises whatever the SDK raises for an invalid message (ValueError, KeyError, ValidationError)."""
    from linebot.v3.messaging.models.message import Message  # type: ignore[import-untyped,unused-ignore]

    return Message.from_dict(message)


def messaging_api(settings: LineSettings, token: str | None = None) -> MessagingApi:
    """A MessagingApi for the configured host (`CEMS_LINE_API_URL`) and channel access token.

    Every call made through it must pass `_request_timeout=LINE_REQUEST_TIMEOUT` (the SDK has no
    default). urllib3 retries only a failed connection, once: anything else is retried by the caller,
    through SQS, under the same X-Line-Retry-Key.
    """
    import urllib3
    from linebot.v3.messaging.api_client import ApiClient  # type: ignore[import-untyped,unused-ignore]
    from linebot.v3.messaging.configuration import Configuration  # type: ignore[import-untyped,unused-ignore]

    configuration = Configuration(
        host=settings.api_url, access_token=token if token is not None else settings.channel_access_token()
    )
    configuration.retries = urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0)
    api: MessagingApi = import_messaging_api().MessagingApi(ApiClient(configuration))
    return api


__all__ = [
    "LINE_REQUEST_TIMEOUT",
    "ApiException",
    "MulticastRequest",
    "PushMessageRequest",
    "import_messaging_api",
    "is_lazy",
    "lazy_linebot_packages",
    "load_client_modules",
    "message_from_dict",
    "messaging_api",
]
