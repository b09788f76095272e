"""LINE Messaging API adapters: push and multicast (LineGateway), rich-menu links (LineRichMenus), the
webhook's link tokens and replies (LineReplyApi).

Rich menus (a scenario's `rich_menu` step): the client is built on first use (the token is read
then, from SSM through the cached parameter, and again whenever the cached token changes), so a
function that never switches a menu never reads it. Every call has `LINE_REQUEST_TIMEOUT`. A failure
comes back as a short reason (an HTTP status or an error class), never with the LINE user id, so
callers can log and count it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from urllib3.exceptions import HTTPError as Urllib3HTTPError

from cems.line.api import ApiException, MulticastRequest, PushMessageRequest
from cems.line.config import LINE_REQUEST_TIMEOUT, LineSettings
from cems.line.deliveries import UnitKind, UnitStatus
from cems.line.dispatch import LineMessage
from cems.line.sender import CallResult, classify_error, response_header

if TYPE_CHECKING:
    from linebot.v3.messaging.api.messaging_api import MessagingApi  # type: ignore[import-untyped,unused-ignore]


class LineRichMenus:
    def __init__(self, settings: LineSettings) -> None:
        self.settings = settings
        self._api: Any = None
        self._token: str | None = None

    def api(self) -> MessagingApi:
        token = self.settings.channel_access_token()
        if self._api is None or token != self._token:
            from cems.line.api import messaging_api

            self._api, self._token = messaging_api(self.settings, token), token
        return self._api

    def link(self, line_user_id: str, rich_menu_id: str | None) -> str | None:
        """Links the user to `rich_menu_id` (None: unlinks, back to the default menu). None when done,
        else why not (`http_<status>` or the error's class name)."""
        try:
            api = self.api()
            if rich_menu_id is None:
                api.unlink_rich_menu_id_from_user(line_user_id, _request_timeout=LINE_REQUEST_TIMEOUT)
            else:
                api.link_rich_menu_id_to_user(
                    line_user_id, rich_menu_id, _request_timeout=LINE_REQUEST_TIMEOUT
                )
        except ApiException as exc:
            return f"http_{exc.status}"
        except (Urllib3HTTPError, OSError) as exc:
            return type(exc).__name__
        return None


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
