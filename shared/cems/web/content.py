"""What a scenario's send step shows on the site (its `web` field): the kind of message, its text,
image and buttons, the pages it may show on and how long it waits to be seen.

Every text and URL is a Liquid template, rendered for the customer when the step sends
(cems.web.channel.render), then checked again (`checked_url`): a URL must still be http(s) once its
values are filled in. The tag sets text with textContent and follows only http(s) URLs, so what a
template produces can never become HTML or script on the shop's page (docs/web.md).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from cems.scenario.problems import bilingual
from cems.scenario.values import Duration, StrictModel, described
from pydantic import BaseModel, Field, field_validator, model_validator

MAX_TITLE = 100
MAX_BODY = 1_000
MAX_LABEL = 40
MAX_URL = 2_048
MAX_BUTTONS = 2
MAX_PAGES = 20
MAX_PATTERN = 200
# How long a message waits in the visitor's inbox for their next visit: long enough for a weekly
# shopper, short enough that a reminder never outlives what it reminds of.
DEFAULT_EXPIRY = timedelta(days=7)
MIN_EXPIRY = timedelta(hours=1)
MAX_EXPIRY = timedelta(days=30)
# The name in `data-cems-slot="<name>"` of the element an inline message goes into. A name, not a
# CSS selector: the tag builds the selector itself, so no scenario can point at the shop's own
# elements (a form, a price) or write a selector the page's engine would choke on.
SLOT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_SLOT = re.compile(SLOT_PATTERN)
# A URL as written: http(s) before any template, so no value filled in later can change the scheme.
_URL_START = re.compile(r"^https?://[^\s/{}]", re.IGNORECASE)
_HTTPS_START = re.compile(r"^https://[^\s/{}]", re.IGNORECASE)
# Whitespace, control characters and backslashes are read differently by different browsers.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")

Kind = Literal["banner", "modal", "slide_in", "inline"]
Position = Literal["top", "bottom"]


def checked_url(url: str, *, https_only: bool = False) -> str:
    """`url` if it is an absolute http(s) URL (https only for `https_only`) with a host and nothing a
    browser could read another way; ValueError (bilingual) otherwise."""
    parts = urlsplit(url) if len(url) <= MAX_URL and not _UNSAFE_URL_CHARS.search(url) else None
    schemes = ("https",) if https_only else ("http", "https")
    if parts is None or parts.scheme.lower() not in schemes or not parts.hostname:
        scheme = "https://" if https_only else "http:// か https://"
        scheme_en = "https://" if https_only else "http:// or https://"
        raise ValueError(
            bilingual(
                f"URL は {scheme} で始まる {MAX_URL} 文字までの絶対 URL にしてください"
                "（空白や制御文字は使えません）",
                f"a URL must be an absolute {scheme_en} URL of at most {MAX_URL} characters, "
                "without spaces or control characters",
            )
        )
    return url


def _url_as_written(value: str, *, https_only: bool) -> str:
    pattern = _HTTPS_START if https_only else _URL_START
    if not pattern.match(value) or _UNSAFE_URL_CHARS.search(value.replace(" ", "")):
        scheme, scheme_en = (
            ("https://", "https://") if https_only else ("http:// か https://", "http:// or https://")
        )
        raise ValueError(
            bilingual(
                f"URL は {scheme} とホスト名で始めてください（テンプレートはその後ろにだけ書けます）",
                f"a URL must start with {scheme_en} and a host name (templates may follow them only)",
            )
        )
    return value


class WebButton(StrictModel, BaseModel):
    """A button: its label and the page it opens (http or https)."""

    doc_ja: ClassVar[str] = "ボタン: 表示する文言と、押したときに開くページ（http / https）。"

    label: Annotated[str, Field(min_length=1, max_length=MAX_LABEL)]
    url: Annotated[str, Field(min_length=1, max_length=MAX_URL)]

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _url_as_written(value, https_only=False)


class WebContent(StrictModel, BaseModel):
    """An on-site message: shown by the tag the next time the customer is on the site, on any page or
    on `pages`, until `expires` after the send. Texts are shown as text, never as HTML."""

    # StrictModel, with BaseModel named again so that linters see a pydantic model (as in
    # cems.scenario.model).

    doc_ja: ClassVar[str] = (
        "サイト上のメッセージ（Web 接客）。次にサイトを訪れたとき、すべてのページか `pages` に合うページで、"
        "送信から `expires` の間タグが表示します。文言は HTML ではなく文字として表示されます。"
    )

    kind: Kind = Field(
        description=described(
            "表示のしかた: banner（上か下の帯）、modal（中央の窓）、slide_in（隅から出る小窓）、"
            "inline（ショップが `data-cems-slot` で用意した要素の中）",
            "How it shows: banner (a strip at the top or bottom), modal (a centred window), slide_in (a "
            "small panel from a corner), inline (inside an element the shop marks with `data-cems-slot`)",
        )
    )
    position: Position | None = Field(
        default=None,
        description=described("banner の位置（既定: top）", "Where a banner shows (default: top)"),
    )
    slot: Annotated[str, Field(pattern=SLOT_PATTERN)] | None = Field(
        default=None,
        description=described(
            'inline の表示先: ページの `data-cems-slot="<slot>"` 要素（英数字・`_`・`-`、64 文字まで）',
            'Where an inline message goes: the page\'s `data-cems-slot="<slot>"` element (letters, '
            "digits, `_`, `-`; at most 64)",
        ),
    )
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE)] | None = None
    body: Annotated[str, Field(min_length=1, max_length=MAX_BODY)] | None = None
    image: Annotated[str, Field(min_length=1, max_length=MAX_URL)] | None = Field(
        default=None, description=described("画像の URL（https）", "The image's URL (https)")
    )
    buttons: Annotated[list[WebButton], Field(max_length=MAX_BUTTONS)] = Field(default_factory=list)
    pages: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_PATTERN)]], Field(max_length=MAX_PAGES)
        ]
        | None
    ) = Field(
        default=None,
        description=described(
            "表示するページの URL パターン（`*` は任意の文字列）。`/` で始まればパス（と `?` 以降）に、"
            "`https://` で始まれば URL 全体に合わせます。省略するとすべてのページ",
            "URL patterns of the pages it may show on (`*` matches anything): one starting with `/` is "
            "matched against the path (and the query, if it has a `?`), one starting with `https://` "
            "against the whole URL. Absent: every page",
        ),
    )
    expires: Duration = Field(
        default=DEFAULT_EXPIRY,
        description=described(
            "送信から表示をやめるまでの期間（1h〜30d、既定 7d）",
            "How long after the send it may still show (1h to 30d; default 7d)",
        ),
    )

    @field_validator("image")
    @classmethod
    def _https_image(cls, value: str | None) -> str | None:
        return None if value is None else _url_as_written(value, https_only=True)

    @field_validator("pages")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not (pattern.startswith("/") or pattern.lower().startswith(("https://", "http://"))):
                raise ValueError(
                    bilingual(
                        f"ページのパターン {pattern!r} は `/` か `https://` で始めてください",
                        f"the page pattern {pattern!r} must start with `/` or `https://`",
                    )
                )
        return value

    @field_validator("expires")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not MIN_EXPIRY <= value <= MAX_EXPIRY:
            raise ValueError(
                bilingual("`expires` は 1h から 30d までです", "`expires` must be from 1h to 30d")
            )
        return value

    @model_validator(mode="after")
    def _shape(self) -> WebContent:
        # Every shape mistake in one message, so one pass over the file finds them all.
        wrong: list[tuple[str, str]] = []
        if not (self.title or self.body or self.image):
            wrong.append(
                ("`title`・`body`・`image` のどれかが必要です", "a `title`, a `body` or an `image` is needed")
            )
        if self.kind == "inline" and self.slot is None:
            wrong.append(
                (
                    'inline には `slot`（ページの data-cems-slot="…" の名前）が必要です',
                    'an inline message needs `slot` (the name in the page\'s data-cems-slot="…")',
                )
            )
        if self.kind != "inline" and self.slot is not None:
            wrong.append(("`slot` は inline のときだけ使えます", "`slot` is for inline messages only"))
        if self.kind != "banner" and self.position is not None:
            wrong.append(("`position` は banner のときだけ使えます", "`position` is for banners only"))
        if wrong:
            raise ValueError(bilingual("、".join(ja for ja, _ in wrong), "; ".join(en for _, en in wrong)))
        return self

    def template_fields(self) -> dict[str, object]:
        """The fields that are Liquid templates, as a JSON value (what rendering fills in)."""
        return {
            "title": self.title,
            "body": self.body,
            "image": self.image,
            "buttons": [{"label": b.label, "url": b.url} for b in self.buttons],
        }


def valid_slot(value: str) -> bool:
    return bool(_SLOT.fullmatch(value))
