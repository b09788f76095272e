"""Composing one marketing mail: MIME parts, unsubscribe headers, the legal footer and tracking.

What every mail carries, and why:

- `List-Unsubscribe: <https://…/u/<token>>` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
  (RFC 8058): mail clients show an unsubscribe button that POSTs to the link, and the large mailbox
  providers require it of bulk senders.
- A footer in both parts, Japanese first with English alongside, as Japan's Act on Specified
  Electronic Mail (特定電子メール法) requires: the sender's name, its postal address, a contact
  for enquiries and complaints, a statement that the recipient may refuse further mail, and the
  link to do so.
- Links rewritten through the click tracker (`/r/<token>`, the token signs the destination) and a
  1×1 open pixel (`/o/<token>`) in the HTML part; each can be turned off per dispatch. The footer is
  added after the rewriting, so the unsubscribe link is never itself a tracked click.

HTML is read with html.parser and only the `<a>` start tags that change are replaced, by their
position in the source: the rest of the marketer's HTML goes out byte for byte as it was rendered.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from html.parser import HTMLParser
from typing import Protocol

from cems import clock
from cems.email.config import EmailSettings
from cems.email.dispatch import EmailDispatch
from cems.engagement.tokens import (
    CONFIRMATION_LIFETIME,
    TokenKind,
    TokenSigner,
    TrackingToken,
    click_url,
    confirm_url,
    open_url,
    trackable_url,
    tracking_expiry,
    unsubscribe_url,
)

# Headers are written with CRLF and RFC 2047 for non-ASCII, folded only beyond RFC 5322's hard limit
# of 998 characters: folding at 78 turns a long unsubscribe URL (it has no space to fold at) into
# encoded words, which no mail client reads as a List-Unsubscribe URL.
OUTPUT_POLICY = SMTP.clone(max_line_length=998)
TEST_SUBJECT_PREFIX = "[テスト/TEST] "
TEST_HEADER = "X-CEMS-Test"
# Bare URLs in a text part: printable ASCII up to whitespace or a character that cannot be in a URL
# (Japanese text often runs straight on after a link, so any non-ASCII character ends it).
_TEXT_URL = re.compile(r"https?://[!-~]+")
# Punctuation that ends a sentence rather than the URL ("…は https://x.jp/a。" / "(see https://x.jp)").
_TRAILING = ".,;:!?)]}'\">"
_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr", "section"}
)
_HIDDEN_TAGS = frozenset({"script", "style", "head", "title"})


class LinkMaker(Protocol):
    """The tracking links of one dispatch."""

    def click(self, url: str) -> str: ...
    def open(self) -> str: ...
    def unsubscribe(self) -> str: ...
    def confirm(self) -> str: ...


class SignedLinks:
    """Links to `engage` carrying signed tokens for one dispatch (cems.engagement.tokens)."""

    def __init__(self, base_url: str, signer: TokenSigner, dispatch: EmailDispatch) -> None:
        self.base_url = base_url
        self.signer = signer
        self.dispatch = dispatch

    def _token(self, kind: TokenKind, url: str | None = None) -> TrackingToken:
        d = self.dispatch
        now = clock.now()
        expires_at = None
        if kind in (TokenKind.CLICK, TokenKind.OPEN):
            expires_at = tracking_expiry(now)
        elif kind is TokenKind.CONFIRM:
            expires_at = int((now + CONFIRMATION_LIFETIME).timestamp())
        return TrackingToken(
            kind=kind,
            dispatch_key=d.idempotency_key,
            customer_id=d.customer_id,
            channel="email",
            scenario_id=d.scenario_id,
            version=d.version,
            step_id=d.step_id,
            variant=d.variant,
            url=url,
            test=d.test,
            address_hash=d.address_hash if kind is TokenKind.CONFIRM else None,
            expires_at=expires_at,
            topic=d.topic if kind is TokenKind.UNSUBSCRIBE else None,
        )

    def click(self, url: str) -> str:
        return click_url(self.base_url, self.signer, self._token(TokenKind.CLICK, url))

    def open(self) -> str:
        return open_url(self.base_url, self.signer, self._token(TokenKind.OPEN))

    def unsubscribe(self) -> str:
        return unsubscribe_url(self.base_url, self.signer, self._token(TokenKind.UNSUBSCRIBE))

    def confirm(self) -> str:
        return confirm_url(self.base_url, self.signer, self._token(TokenKind.CONFIRM))


@dataclass(frozen=True)
class ComposedEmail:
    message: EmailMessage
    unsubscribe_url: str
    links_tracked: int

    def as_bytes(self) -> bytes:
        """The message as SES takes it (Raw): CRLF line ends, non-ASCII headers RFC 2047-encoded."""
        return self.message.as_bytes(policy=OUTPUT_POLICY)


def compose(
    dispatch: EmailDispatch, to_address: str, settings: EmailSettings, links: LinkMaker
) -> ComposedEmail:
    """The mail for `dispatch` to `to_address`. Raises ValueError for an address or sender that is
    not a valid mailbox (the email package's own checks)."""
    if dispatch.purpose == "confirmation":
        return compose_confirmation(dispatch, to_address, settings, links.confirm())
    unsubscribe = links.unsubscribe()
    click: Callable[[str], str] | None = None
    if dispatch.track_clicks:
        click = links.click
    tracked = 0
    text = dispatch.text if dispatch.text and dispatch.text.strip() else None
    body_html = dispatch.html if dispatch.html and dispatch.html.strip() else None
    if text is None and body_html is not None:
        # A text alternative for clients (and spam filters) that want one; links stay visible in it.
        text = html_to_text(body_html)
    assert text is not None  # the dispatch has html or text
    if click is not None:
        text, n = rewrite_text_links(text, click, skip_prefix=settings.engage_base_url)
        tracked += n
    text = text.rstrip() + "\n\n" + text_footer(settings, unsubscribe)
    if body_html is not None:
        if click is not None:
            body_html, n = rewrite_html_links(body_html, click, skip_prefix=settings.engage_base_url)
            tracked += n
        addition = html_footer(settings, unsubscribe)
        if dispatch.track_opens:
            pixel = html.escape(links.open(), quote=True)
            addition += f'<img src="{pixel}" width="1" height="1" alt="" style="display:block;border:0">'
        body_html = insert_before_body_end(body_html, addition)

    message = _headers(dispatch, to_address, settings)
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if dispatch.test:
        message[TEST_HEADER] = "1"
    message.set_content(text, charset="utf-8")
    if body_html is not None:
        message.add_alternative(body_html, subtype="html", charset="utf-8")
    return ComposedEmail(message, unsubscribe, tracked)


def _headers(dispatch: EmailDispatch, to_address: str, settings: EmailSettings) -> EmailMessage:
    message = EmailMessage()
    message["From"] = Address(display_name=settings.from_name, addr_spec=settings.from_address)
    message["To"] = Address(addr_spec=to_address.strip())
    subject = dispatch.subject.strip()
    message["Subject"] = TEST_SUBJECT_PREFIX + subject if dispatch.test else subject
    message["Date"] = format_datetime(clock.now())
    message["Message-ID"] = make_msgid(domain=settings.from_address.rpartition("@")[2] or None)
    return message


# The double opt-in mail --------------------------------------------------------------------------

CONFIRMATION_SUBJECT = "【{shop}】メール配信登録の確認 / Please confirm your email subscription"


def compose_confirmation(
    dispatch: EmailDispatch, to_address: str, settings: EmailSettings, confirm: str
) -> ComposedEmail:
    """The mail that asks whether this address wants the shop's marketing mail (double opt-in):
    consent is recorded only when its link's button is pressed. Not a marketing mail itself: no
    unsubscribe header (there is nothing to unsubscribe from yet), no tracking, and it says plainly
    that ignoring it changes nothing. The sender's name, postal address and contact are shown."""
    name = settings.from_name
    text = (
        f"{name} からのお知らせメールの受け取り登録を受け付けました。\n"
        "次のリンクを開き、「登録する」ボタンを押すと登録が完了します(7 日間有効)。\n"
        f"{confirm}\n"
        "お心当たりがない場合は、このメールを破棄してください。登録されず、今後メールをお送りすることもありません。\n"
        "\n"
        f"We received a request to send you marketing email from {name}.\n"
        "Open this link and press the button to confirm (valid for 7 days):\n"
        f"{confirm}\n"
        "If you did not ask for this, ignore this mail: you will not be subscribed or mailed again.\n"
        "\n"
        "――――――――――――――――――――\n"
        f"送信者 / Sender: {name}\n"
        f"住所 / Address: {settings.postal_address}\n"
        f"お問い合わせ / Enquiries: {settings.contact}\n"
    )
    link = html.escape(confirm, quote=True)
    body_html = (
        '<!doctype html><html lang="ja"><body style="font-family:sans-serif;line-height:1.7">'
        f"<p>{html.escape(name)} からのお知らせメールの受け取り登録を受け付けました。"
        "下のボタンから登録を完了してください(7 日間有効)。</p>"
        f'<p><a href="{link}" style="display:inline-block;padding:10px 20px;background:#2e6b30;color:#fff;'
        'text-decoration:none;border-radius:6px">登録を確認する / Confirm</a></p>'
        "<p>お心当たりがない場合は、このメールを破棄してください。登録されず、今後メールをお送りすることもありません。</p>"
        f'<p lang="en">We received a request to send you marketing email from {html.escape(name)}. '
        "Press the button to confirm (valid for 7 days). If you did not ask for this, ignore this mail: "
        "you will not be subscribed or mailed again.</p>"
        '<p style="font-size:12px;color:#555">'
        f"送信者 / Sender: {html.escape(name)}<br>住所 / Address: {html.escape(settings.postal_address)}<br>"
        f"お問い合わせ / Enquiries: {html.escape(settings.contact)}</p></body></html>"
    )
    message = _headers(dispatch, to_address, settings)
    message.set_content(text, charset="utf-8")
    message.add_alternative(body_html, subtype="html", charset="utf-8")
    return ComposedEmail(message, "", 0)


# Footer -------------------------------------------------------------------------------------------


def text_footer(settings: EmailSettings, unsubscribe: str) -> str:
    return (
        "――――――――――――――――――――\n"
        f"このメールは {settings.from_name} から、メールの受け取りに同意いただいた方にお送りしています。\n"
        "今後メールの受け取りを希望されない場合は、次のリンクから配信を停止できます。\n"
        f"配信停止: {unsubscribe}\n"
        f"送信者: {settings.from_name}\n"
        f"住所: {settings.postal_address}\n"
        f"お問い合わせ・苦情の窓口: {settings.contact}\n"
        "\n"
        f"This email was sent by {settings.from_name} to customers who agreed to receive it.\n"
        "You may refuse further emails at any time with this link:\n"
        f"Unsubscribe: {unsubscribe}\n"
        f"Sender: {settings.from_name}\n"
        f"Address: {settings.postal_address}\n"
        f"Enquiries and complaints: {settings.contact}\n"
    )


def html_footer(settings: EmailSettings, unsubscribe: str) -> str:
    name = html.escape(settings.from_name)
    postal = html.escape(settings.postal_address)
    contact = html.escape(settings.contact)
    link = html.escape(unsubscribe, quote=True)
    return (
        '<div class="cems-footer" style="margin-top:24px;padding-top:12px;border-top:1px solid #ccc;'
        'font-size:12px;line-height:1.6;color:#555">'
        f"<p>このメールは {name} から、メールの受け取りに同意いただいた方にお送りしています。<br>"
        "今後メールの受け取りを希望されない場合は、次のリンクから配信を停止できます。<br>"
        f'<a href="{link}">配信停止はこちら</a></p>'
        f"<p>送信者: {name}<br>住所: {postal}<br>お問い合わせ・苦情の窓口: {contact}</p>"
        f'<p lang="en">This email was sent by {name} to customers who agreed to receive it. '
        f'You may refuse further emails at any time: <a href="{link}">unsubscribe</a>.<br>'
        f"Sender: {name}<br>Address: {postal}<br>Enquiries and complaints: {contact}</p>"
        "</div>"
    )


# Links --------------------------------------------------------------------------------------------


def _tracked(url: str, skip_prefix: str) -> str | None:
    """The destination to put in a click token, or None to leave the link as written: mailto:, tel:,
    anchors and relative links (nothing to redirect to), a tracking link already, or a URL no token
    may carry (tokens.trackable_url encodes spaces and non-ASCII as a browser would)."""
    if skip_prefix and url.startswith(skip_prefix + "/"):
        return None
    return trackable_url(url)


def rewrite_text_links(text: str, click: Callable[[str], str], *, skip_prefix: str = "") -> tuple[str, int]:
    """Bare http(s) URLs in plain text replaced by their click-tracking links."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        found = match.group(0)
        url = found.rstrip(_TRAILING)
        # A closing bracket belongs to the URL when the URL opened one ("…/wiki/Tea_(drink)").
        while found[len(url) : len(url) + 1] == ")" and url.count("(") > url.count(")"):
            url += ")"
        destination = _tracked(url, skip_prefix)
        if destination is None:
            return found
        count += 1
        return click(destination) + found[len(url) :]

    return _TEXT_URL.sub(replace, text), count


class _Positions:
    """Absolute offsets in a string from html.parser's (line, column) positions."""

    def __init__(self, source: str) -> None:
        self.starts = [0]
        for index, char in enumerate(source):
            if char == "\n":
                self.starts.append(index + 1)

    def offset(self, line: int, column: int) -> int:
        return self.starts[line - 1] + column


class _LinkFinder(HTMLParser):
    def __init__(self, source: str, click: Callable[[str], str], skip_prefix: str) -> None:
        super().__init__(convert_charrefs=True)
        self.positions = _Positions(source)
        self.click = click
        self.skip_prefix = skip_prefix
        # (start offset, length, replacement) of each <a> start tag to replace
        self.edits: list[tuple[int, int, str]] = []
        self.body_end: int | None = None
        self.html_end: int | None = None

    def _here(self) -> int:
        return self.positions.offset(*self.getpos())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._link(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._link(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._here()
        elif tag == "html":
            self.html_end = self._here()

    def _link(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        if tag != "a":
            return
        href = next((value for name, value in attrs if name == "href"), None)
        destination = None if href is None else _tracked(href.strip(), self.skip_prefix)
        if destination is None:
            return
        original = self.get_starttag_text() or ""
        tracked = self.click(destination)
        parts = ["<a"]
        for name, value in attrs:
            if name == "href":
                value = tracked
            parts.append(f" {name}" if value is None else f' {name}="{html.escape(value, quote=True)}"')
        parts.append(" />" if closed else ">")
        self.edits.append((self._here(), len(original), "".join(parts)))


def rewrite_html_links(source: str, click: Callable[[str], str], *, skip_prefix: str = "") -> tuple[str, int]:
    """Every `<a href="http(s)://…">` sent through the click tracker; everything else unchanged."""
    finder = _LinkFinder(source, click, skip_prefix)
    finder.feed(source)
    finder.close()
    return _apply(source, finder.edits), len(finder.edits)


def insert_before_body_end(source: str, addition: str) -> str:
    """`addition` just before the last `</body>` (else `</html>`), or at the end when there is none."""
    finder = _LinkFinder(source, lambda url: url, "")
    finder.feed(source)
    finder.close()
    at = finder.body_end if finder.body_end is not None else finder.html_end
    if at is None:
        return source + addition
    return source[:at] + addition + source[at:]


def _apply(source: str, edits: list[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    cursor = 0
    for start, length, replacement in sorted(edits):
        pieces += [source[cursor:start], replacement]
        cursor = start + length
    pieces.append(source[cursor:])
    return "".join(pieces)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.hrefs: list[str | None] = []
        self.link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag == "a":
            self.hrefs.append(dict(attrs).get("href"))
            self.link_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag == "a" and self.hrefs:
            href = self.hrefs.pop()
            if href and href.startswith(("http://", "https://")) and href not in "".join(self.link_text):
                self.parts.append(f" ( {href} )")

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        self.parts.append(data)
        if self.hrefs:
            self.link_text.append(data)


def html_to_text(source: str) -> str:
    """A plain-text rendering of HTML for the text/plain alternative: text, line breaks, link URLs."""
    extractor = _TextExtractor()
    extractor.feed(source)
    extractor.close()
    lines = [" ".join(line.split()) for line in "".join(extractor.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
