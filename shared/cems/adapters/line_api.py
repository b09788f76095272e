"""LINE Messaging API adapters: push and multicast (LineGateway), the webhook's link tokens and replies
(LineReplyApi). Rich-menu links are `cems.adapters.line_rich_menus` (the scenario runner's functions
load no LINE SDK until a menu switches)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from urllib3.exceptions import HTTPError as Urllib3HTTPError

from cems.line.api import ApiException, MulticastRequest, PushMessageRequest
from cems.line.config import LINE_REQUEST_TIMEOUT
from cems.line.deliveries import UnitKind, UnitStatus
from cems.line.dispatch import LineMessage
from cems.line.sender import CallResult, classify_error, response_header

if TYPE_CHECKING:
    from linebot.v3.messaging.api.messaging_api import MessagingApi  # type: ignore[import-untyped,unused-ignore]


class LineGateway:
    """Push and multicast through the SDK's MessagingApi, every call with a time-out and a retry key."""

    def __init__(self, api_factory: Callable[[], Any], timeout: tuple[float, float] = LINE_REQUEST_TIMEOUT):
        self._api_factory = api_factory
        self._api: Any = None
        self.timeout = timeout

    def api(self) -> Any:
        if self._api is None:
            self._api = self._api_factory()
        return self._api

    def send(
        self, kind: UnitKind, to: Sequence[str], messages: list[LineMessage], key: str, quiet: bool
    ) -> CallResult:
        api = self.api()
        try:
            if kind is UnitKind.PUSH:
                push = PushMessageRequest.from_dict(
                    {"to": to[0], "messages": messages, "notificationDisabled": quiet}
                )
                response = api.push_message_with_http_info(
                    push, x_line_retry_key=key, _request_timeout=self.timeout
                )
            else:
                multicast = MulticastRequest.from_dict(
                    {"to": list(to), "messages": messages, "notificationDisabled": quiet}
                )
                response = api.multicast_with_http_info(
                    multicast, x_line_retry_key=key, _request_timeout=self.timeout
                )
        except ApiException as exc:
            result = classify_error(exc.status or 0, exc.body, exc.headers)
            if result.unauthorised:
                self._api = None  # the token may have been rotated: read it again next time
            return result
        except Urllib3HTTPError as exc:
            # Time-outs, refused or dropped connections: LINE may or may not have it; the retry key
            # makes trying again safe.
            return CallResult(UnitStatus.RETRY, reason=f"network error: {type(exc).__name__}")
        return CallResult(
            UnitStatus.SENT,
            http_status=response.status_code,
            line_request_id=response_header(response.headers, "x-line-request-id"),
        )


class LineReplyApi:
    """The webhook's calls (ports.LineReplies) through the SDK's MessagingApi, each with a time-out."""

    def __init__(self, api: MessagingApi) -> None:
        self.api = api

    def issue_link_token(self, line_user_id: str) -> str:
        """A link token for this LINE user (valid 10 minutes, single use)."""
        response = self.api.issue_link_token(line_user_id, _request_timeout=LINE_REQUEST_TIMEOUT)
        return str(response.link_token)

    def reply(self, reply_token: str, messages: list[Any]) -> None:
        from linebot.v3.messaging import ReplyMessageRequest  # type: ignore[import-untyped,unused-ignore]

        self.api.reply_message(
            ReplyMessageRequest(reply_token=reply_token, messages=messages),
            _request_timeout=LINE_REQUEST_TIMEOUT,
        )
