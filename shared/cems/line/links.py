"""Links in LINE messages through the click tracker, so LINE steps report clicks as email steps do.

What is rewritten:

- every `uri` action (buttons, carousels, confirm templates, flex bubbles, quick replies, rich
  messages) and every imagemap `uri` action's `linkUri`, when it is http or https;
- every http(s) URL written in the `text` of a `text` or `textV2` message (LINE's chat turns such a
  URL into a link, so it is clicked like a button and must count like one), in the short form
  (`/r/<code>`, ShortLinkTracker) when the tracker makes one, so the text stays readable.

What is not: `tel:`/`line:` and other schemes; `altUri` (the desktop variant of an action, rarely
used; it keeps pointing at the original page); text that LINE does not turn into links or that is
not shown as written (flex `text` components, template texts, a message action's `text`, which is
what the customer sends); a link already through a click tracker (`is_click_url`), so tracking
twice (a redo, or a tracked link pasted into content) never wraps a redirect in another.

A URL in text, as LINE's chat finds it in Japanese writing: it starts at `http://` or `https://`
and runs over URL characters (RFC 3986's, ASCII only), so it ends at the first space, full-width or
other non-ASCII character (「」、。） and kana directly after it are not swallowed); trailing `.`,
`,`, `:`, `;`, `!`, `?`, `'` and `*`, and a `)` or `]` without its opening partner, end the sentence,
not the URL. Japanese written into a URL's path stops it there, as in LINE's own linkifier: write
such a URL percent-encoded.

Three limits of the text form:

- Length. A URL in a text is tracked in its short form when the tracker has one
  (ShortLinkTracker: `{engage}/r/<16-character code>`, about 45 characters, usually shorter than the
  shop's own URL); else, or in a `uri` action, it is the long signed token (about 250 characters
  longer than the page's URL). A text may be at most 5,000 characters, counted by LINE in UTF-16 code
  units. Text URLs are tracked from the first on while the text stays within the limit; the first
  that would pass it, and every one after it, stays as written (untracked: its clicks are not
  counted, but the message is sent as the author wrote it, never refused for a limit it met). With
  short links this bites only a text already at the limit whose URLs are shorter than a short link.
- LINE emoji. A `text` message's `emojis[].index` is the position of its `$` placeholder in UTF-16
  code units; each index after a rewritten URL moves by what the URL grew. A `$` placeholder ends a
  URL before it. When an index does not point at a `$` (content LINE itself would refuse), the
  text's URLs stay as written rather than guessing. LINE counts a `$` as the emoji's undisclosed
  alternative text, so near the limit LINE may still refuse what looks within it, as it would
  without tracking.
- `textV2` substitutions (`{name}`) are by key, not position, and `{`/`}` are not URL characters,
  so a placeholder right after a URL stays a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from cems.engagement.tokens import is_click_url, trackable_url
from cems.line.dispatch import MAX_TEXT_LENGTH, ShortLink

if TYPE_CHECKING:
    from cems.scenario.engine import Dispatch

TRACKED_SCHEMES = ("http://", "https://")
TEXT_MESSAGE_TYPES = ("text", "textV2")
# An http(s) URL over RFC 3986's characters (unreserved, reserved and `%`); not after a letter or
# digit, so `xhttp://` or a word run into a scheme is not taken for one.
_TEXT_URL = re.compile(r"(?<![A-Za-z0-9])https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
# Punctuation that ends a sentence more often than a URL.
_TRAILING = frozenset(".,:;!?'*")
_CLOSING = {")": "(", "]": "["}


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


class ShortUrl(NamedTuple):
    """A text URL's short tracked form: the URL written into the text, its code, and what the sender
    stores under the code."""

    url: str
    code: str
    link: ShortLink


@runtime_checkable
class ShortLinkTracker(Protocol):
    """A click tracker that also makes short links, for URLs shown in a text (the customer reads
    them): `/r/<code>`, resolved by a lookup of what the sender stored. `uri` actions keep the long
    signed form: nobody reads it behind a button, and it needs no store at send or click time."""

    def __call__(self, dispatch: Dispatch, url: str) -> str: ...

    def short(self, dispatch: Dispatch, dispatch_key: str | None, url: str) -> ShortUrl:
        """The short link of `url` in `dispatch` (the customer's own), or, with `dispatch_key`, in
        the shared dispatch of that key made from `dispatch`'s content (naming no customer)."""
        ...


def text_tracker(
    links: Any, dispatch: Dispatch, dispatch_key: str | None, made: dict[str, ShortLink]
) -> Callable[[str], str] | None:
    """The tracker of text URLs for `track_links`: short links, each put in `made` (code -> link)
    for the dispatch to carry to its sender; None when `links` makes none (the long form then)."""
    if not isinstance(links, ShortLinkTracker):
        return None

    def short(url: str) -> str:
        link = links.short(dispatch, dispatch_key, url)
        made[link.code] = link.link
        return link.url

    return short


def carried(made: dict[str, ShortLink], *contents: list[dict[str, Any]]) -> dict[str, ShortLink]:
    """The short links of `made` that the texts of `contents` hold: a URL the length rule left as
    written had its link made but not used, and nothing is stored for it."""
    texts = [m["text"] for messages in contents for m in messages if isinstance(m.get("text"), str)]
    return {code: link for code, link in made.items() if any(f"/r/{code}" in text for text in texts)}


def track_links(
    messages: list[dict[str, Any]],
    tracked_url: Callable[[str], str],
    text_url: Callable[[str], str] | None = None,
) -> list[dict[str, Any]]:
    """A copy of `messages` with each http(s) action URI replaced by `tracked_url(url)` and each
    http(s) URL in a text message's text by `text_url(url)` (`tracked_url` without one); see the
    module's docstring for what is left as written."""
    in_text = text_url or tracked_url
    return [_track_text(_rewrite(message, tracked_url), in_text) for message in messages]


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
            if (
                isinstance(target, str)
                and target.lower().startswith(TRACKED_SCHEMES)
                and not is_click_url(target)
            ):
                rewritten[field] = tracked_url(target)
    return rewritten


def _track_text(message: dict[str, Any], tracked_url: Callable[[str], str]) -> dict[str, Any]:
    """`message` with the URLs of its text tracked, when it is a text message (only the message
    itself: a flex `text` component has the same `type` and `text` and is not linkified by LINE)."""
    text = message.get("text")
    if message.get("type") not in TEXT_MESSAGE_TYPES or not isinstance(text, str):
        return message
    emojis = message.get("emojis") if message.get("type") == "text" else None
    placeholders = _placeholders(text, emojis)
    if placeholders is None:
        return message
    room = MAX_TEXT_LENGTH - _utf16_length(text)
    pieces: list[str] = []
    grown: list[tuple[int, int]] = []  # (end of a rewritten URL in `text`, code units it grew)
    written = 0
    for start, end, url in _text_urls(text, placeholders):
        replacement = tracked_url(url)
        growth = _utf16_length(replacement) - (end - start)  # the URL as written is ASCII
        if growth > room:
            break  # this and later URLs stay as written (module docstring, "Length")
        room -= growth
        pieces += [text[written:start], replacement]
        grown.append((end, growth))
        written = end
    if not grown:
        return message
    rewritten = {**message, "text": "".join(pieces) + text[written:]}
    if placeholders:
        assert isinstance(emojis, list)
        rewritten["emojis"] = [
            {**emoji, "index": emoji["index"] + sum(g for end, g in grown if end <= position)}
            for emoji, position in zip(emojis, placeholders, strict=True)
        ]
    return rewritten


def _placeholders(text: str, emojis: Any) -> list[int] | None:
    """The position in `text` (Python's, by code point) of each LINE emoji's `$`, in the order of
    `emojis`; None when an index is no UTF-16 offset of a `$` in `text`."""
    if not emojis:
        return []
    if not isinstance(emojis, list):
        return None
    at_offset: dict[int, int] = {}
    offset = 0
    for at, char in enumerate(text):
        at_offset[offset] = at
        offset += 2 if ord(char) > 0xFFFF else 1
    positions: list[int] = []
    for emoji in emojis:
        index = emoji.get("index") if isinstance(emoji, dict) else None
        position = at_offset.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        if position is None or text[position] != "$":
            return None
        positions.append(position)
    return positions


def _text_urls(text: str, placeholders: list[int]) -> Iterator[tuple[int, int, str]]:
    """(start, end, destination) of each URL in `text` the tracker should take, in order."""
    for match in _TEXT_URL.finditer(text):
        start, end = match.span()
        end = min([p for p in placeholders if start < p < end], default=end)  # `$` of a LINE emoji
        written = _trim(text[start:end])
        destination = trackable_url(written)
        if destination is None or is_click_url(written):
            continue
        yield start, start + len(written), destination


def _trim(url: str) -> str:
    """`url` without the sentence's punctuation after it (a `)` or `]` only when unbalanced, so
    `https://ja.wikipedia.org/wiki/Sencha_(tea)` keeps its own)."""
    while url:
        last = url[-1]
        if last in _TRAILING or (last in _CLOSING and url.count(last) > url.count(_CLOSING[last])):
            url = url[:-1]
        else:
            break
    return url


def _utf16_length(text: str) -> int:
    """The length LINE counts: UTF-16 code units (a character outside the BMP counts two)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def has_tracked_links(messages: list[dict[str, Any]]) -> bool:
    """Whether `track_links` would rewrite anything in `messages`."""
    found: list[str] = []

    def note(url: str) -> str:
        found.append(url)
        return url

    track_links(messages, note)
    return bool(found)
