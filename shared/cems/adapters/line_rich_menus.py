"""Rich-menu links for a scenario's `rich_menu` step (LINE Messaging API).

The client is built on first use (the token is read then, from SSM through the cached parameter, and
again whenever the cached token changes), so a function that never switches a menu never reads it or
loads the LINE SDK. Every call has `LINE_REQUEST_TIMEOUT`. A failure comes back as a short reason (an
HTTP status or an error class), never with the LINE user id, so callers can log and count it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cems.line.config import LINE_REQUEST_TIMEOUT, LineSettings

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
        # Imported here: trigger, tick and broadcast build this at init, and the LINE SDK costs their
        # cold start 100+ ms; most of their invocations never switch a menu.
        from urllib3.exceptions import HTTPError as Urllib3HTTPError

        from cems.line.api import ApiException

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
