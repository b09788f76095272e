"""Links in LINE messages through the click tracker, so LINE steps report clicks as email steps do.

What is rewritten: every `uri` action (buttons, carousels, confirm templates, flex bubbles, quick
replies, rich messages) and every imagemap `uri` action's `linkUri`, when it is http or https. What is
not: URLs typed into a text message (LINE shows them as they are written, and a long tracking URL
there would be what the customer reads), `tel:`/`line:` and other schemes, and `altUri` (the
desktop variant of an action, rarely used; it keeps pointing at the original page).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TRACKED_SCHEMES = ("http://", "https://")


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
