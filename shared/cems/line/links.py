"""Links in LINE messages through the click tracker, so LINE steps report clicks as email steps do.

What is rewritten: every `uri` action (buttons, carousels, confirm templates, flex bubbles, quick
replies, rich messages) and every imagemap `uri` action's `linkUri`, when it is http or https. What is
not: URLs typed into a text message (LINE shows them as they are written, and a long tracking URL
there would be what the customer reads), `tel:`/`line:` and other schemes, and `altUri` (the
desktop variant of an action, rarely used; it keeps pointing at the original page).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cems.scenario.engine import Dispatch

TRACKED_SCHEMES = ("http://", "https://")


@runtime_checkable
class SharedLinkTracker(Protocol):
    """A click tracker that can also track the links of a shared (multicast) dispatch: LINE sends
    the same bytes to every recipient of a multicast, so such a link names the shared dispatch and
    no customer (cems.engagement.engage counts its clicks in the step's report cell)."""

    def __call__(self, dispatch: Dispatch, url: str) -> str: ...

    def shared(self, dispatch: Dispatch, dispatch_key: str, url: str) -> str:
        """The tracked URL of `url` in the shared dispatch `dispatch_key` made from `dispatch`'s
        content (its report cell; its customer is not named)."""
        ...


def track_links(messages: list[dict[str, Any]], tracked_url: Callable[[str], str]) -> list[dict[str, Any]]:
    """A copy of `messages` with each http(s) action URI replaced by `tracked_url(uri)`."""
    return [_rewrite(message, tracked_url) for message in messages]


def _rewrite(value: Any, tracked_url: Callable[[str], str]) -> Any:
    if isinstance(value, list):
        return [_rewrite(item, tracked_url) for item in value]
    if not isinstance(value, dict):
        return value
    rewritten = {key: _rewrite(item, tracked_url) for key, item in value.items() if key != "altUri"}
    if "altUri" in value:
        rewritten["altUri"] = value["altUri"]
    if value.get("type") == "uri":
        for field in ("uri", "linkUri"):  # action objects / imagemap actions
            target = value.get(field)
            if isinstance(target, str) and target.lower().startswith(TRACKED_SCHEMES):
                rewritten[field] = tracked_url(target)
    return rewritten


def has_tracked_links(messages: list[dict[str, Any]]) -> bool:
    """Whether `track_links` would rewrite anything in `messages`."""
    found: list[str] = []

    def note(url: str) -> str:
        found.append(url)
        return url

    track_links(messages, note)
    return bool(found)
