"""What `engage` answers people: the unsubscribe pages (Japanese first, English alongside), the
open pixel and error answers, with headers that keep them out of caches, referrers and frames.

The pages are small self-contained HTML (inline style, no script, no external resource), so the
Content-Security-Policy can forbid everything else. The unsubscribe form posts back to the same
URL with `List-Unsubscribe=One-Click`, the body a mail client's one-click POST (RFC 8058) sends.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from cems.engagement.engage import ConfirmResult, Preferences, TopicResult, UnsubscribeResult
from cems.engagement.tokens import URL_SAFE_CHARS

# The smallest transparent GIF (1×1, 42 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0, private"
# Every answer: never cached (each request is a fact to record), never indexed, never framed.
COMMON_HEADERS = {
    "Cache-Control": NO_STORE,
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}
HTML_HEADERS = {
    **COMMON_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
}
HTML = "text/html; charset=utf-8"
GIF = "image/gif"


def location(url: str) -> str:
    """A validated http(s) destination as a Location header value (ASCII only): the URL's own syntax
    kept, anything else (in practice non-ASCII, e.g. a Japanese path) percent-encoded as UTF-8."""
    return quote(url, safe=URL_SAFE_CHARS)


@dataclass(frozen=True)
class Page:
    status: int
    title_ja: str
    title_en: str
    body_ja: str
    body_en: str


def wants_html(accept: str | None) -> bool:
    """Whether the caller is a browser (which asks for text/html) rather than a program."""
    return "text/html" in (accept or "").lower()


def wants_json(accept: str | None) -> bool:
    return "application/json" in (accept or "").lower()


def wants_image(accept: str | None) -> bool:
    """Whether the caller is loading an image (browsers and mail clients ask for image/*)."""
    return "image/" in (accept or "").lower()


UNSUBSCRIBE_BUTTON = (
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">配信を停止する<span lang="en">Unsubscribe</span></button></form>'
)
CONFIRM_BUTTON = (
    '<form method="post"><button type="submit" class="yes">登録する<span lang="en">Confirm</span>'
    "</button></form>"
)


def render(page: Page, *, shop: str | None = None, form: bool = False, button: str | None = None) -> str:
    """The page as HTML; `form` adds the one-click unsubscribe button posting back to this URL,
    `button` another form (CONFIRM_BUTTON)."""
    sender = f'<p class="shop">{escape(shop)}</p>' if shop else ""
    button = UNSUBSCRIBE_BUTTON if form else (button or "")
    return (
        '<!doctype html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{escape(page.title_ja)} / {escape(page.title_en)}</title>"
        f"<style>{_STYLE}</style></head><body><main>{sender}"
        f"<h1>{escape(page.title_ja)}</h1><p>{escape(page.body_ja)}</p>"
        f'<h2 lang="en">{escape(page.title_en)}</h2><p lang="en">{escape(page.body_en)}</p>'
        f"{button}</main></body></html>"
    )


_STYLE = (
    "body{font-family:system-ui,-apple-system,'Hiragino Sans','Noto Sans JP',sans-serif;background:#f6f6f4;"
    "color:#222;margin:0;padding:2rem 1rem}main{max-width:32rem;margin:auto;background:#fff;padding:1.5rem;"
    "border-radius:8px}h1{font-size:1.3rem}h2{font-size:1.05rem;color:#555;margin-top:1.5rem}"
    "p{line-height:1.7}.shop{color:#666;font-size:.9rem}button{font-size:1rem;padding:.7rem 1.4rem;"
    "border:0;border-radius:6px;background:#b03a2e;color:#fff;cursor:pointer}"
    "button span{display:block;font-size:.8rem}button.yes{background:#2e6b30}"
    "form{margin:.6rem 0}ul{list-style:none;padding:0}li{display:flex;justify-content:space-between;"
    "align-items:center;gap:1rem;border-top:1px solid #eee;padding:.6rem 0}li form{margin:0}"
    "button.quiet{background:#eee;color:#222;font-size:.9rem;padding:.5rem 1rem}"
    ".state{color:#666;font-size:.9rem}"
)

CONFIRM = Page(
    200,
    "配信停止の確認",
    "Confirm unsubscribe",
    "下のボタンを押すと、このメールアドレスへのお知らせメールの配信を停止します。",
    "Press the button below to stop marketing email to this address.",
)
UNSUBSCRIBED = Page(
    200,
    "配信を停止しました",
    "You have been unsubscribed",
    "今後、このメールアドレスにお知らせメールはお送りしません。ご利用ありがとうございました。",
    "We will not send marketing email to this address any more. Thank you.",
)
ALREADY = Page(
    200,
    "配信は停止済みです",
    "You are already unsubscribed",
    "このメールアドレスへのお知らせメールの配信は、すでに停止しています。",
    "Marketing email to this address was already stopped.",
)
TEST = Page(
    200,
    "テスト送信のリンクです",
    "This link is from a test mail",
    "テスト送信されたメールのリンクのため、配信設定は変更していません。",
    "This link comes from a test send, so nothing was changed.",
)
UNKNOWN = Page(
    404,
    "お客様情報が見つかりません",
    "We could not find you",
    "このリンクのお客様情報は見つかりませんでした(削除済みの可能性があります)。何も変更していません。",
    "We could not find the customer this link was for (it may have been deleted). Nothing was changed.",
)
INVALID = Page(
    400,
    "リンクが正しくありません",
    "This link is not valid",
    "リンクが途中で切れているか、変更されています。メールのリンクをもう一度そのままお試しください。",
    "The link is cut short or was altered. Please try the link in the mail again, exactly as it is.",
)
# A short link (`/r/<code>`, LINE text) that finds nothing: never made, or past the time its clicks
# were counted (its item is gone by TTL; the long links of buttons still lead on).
LINK_NOT_FOUND = Page(
    404,
    "リンクが見つかりません",
    "This link was not found",
    "リンクの有効期限が切れているか、途中で切れています。お手数ですが、ショップのサイトから直接ご覧ください。",
    "The link has expired or is cut short. Please visit the shop's site directly.",
)
# The click tracker could not look a short link up (its store did not answer): try again.
LINK_UNAVAILABLE = Page(
    503,
    "ただいま混み合っています",
    "Please try again",
    "リンク先を確認できませんでした。少し時間をおいて、もう一度お試しください。",
    "We could not look this link up just now. Please try again in a moment.",
)

# Double opt-in (cems.consent): the confirmation mail's link.
CONFIRM_OPTIN = Page(
    200,
    "メール配信登録の確認",
    "Confirm your subscription",
    "下のボタンを押すと、このメールアドレスへのお知らせメールの配信に同意したことになります。",
    "Press the button below to agree to receive marketing email at this address.",
)
OPTIN_CONFIRMED = Page(
    200,
    "登録が完了しました",
    "You are subscribed",
    "お知らせメールをお送りします。配信はいつでも、メール末尾のリンクから停止できます。",
    "We will send you marketing email. You can stop it at any time with the link at the end of each mail.",
)
OPTIN_ALREADY = Page(
    200,
    "登録済みです",
    "You are already subscribed",
    "このメールアドレスへのお知らせメールの配信には、すでに同意いただいています。",
    "You had already agreed to receive marketing email at this address.",
)
OPTIN_EXPIRED = Page(
    410,
    "リンクの有効期限が切れています",
    "This link has expired",
    "確認リンクの有効期限(7 日間)が過ぎています。"
    "お手数ですが、ショップでもう一度登録してください。何も変更していません。",
    "The confirmation link was valid for 7 days. Please sign up again in the shop. Nothing was changed.",
)
OPTIN_ADDRESS_CHANGED = Page(
    409,
    "メールアドレスが変更されています",
    "Your email address has changed",
    "このリンクのメールアドレスは、現在ご登録のアドレスと異なります。何も変更していません。",
    "This link is for an address that is no longer the one on file. Nothing was changed.",
)

RESULT_PAGES = {
    UnsubscribeResult.UNSUBSCRIBED: UNSUBSCRIBED,
    UnsubscribeResult.ALREADY: ALREADY,
    UnsubscribeResult.TEST: TEST,
    UnsubscribeResult.UNKNOWN: UNKNOWN,
}

CONFIRM_PAGES = {
    ConfirmResult.CONFIRMED: OPTIN_CONFIRMED,
    ConfirmResult.ALREADY: OPTIN_ALREADY,
    ConfirmResult.EXPIRED: OPTIN_EXPIRED,
    ConfirmResult.ADDRESS_CHANGED: OPTIN_ADDRESS_CHANGED,
    ConfirmResult.UNKNOWN: UNKNOWN,
}


# ------------------------------------------------------------------------------ the preference centre

# The page a mail's unsubscribe link opens (GET /u/): what to stop, and each topic's state.
PREFERENCES = Page(
    200,
    "配信停止の確認・配信設定",
    "Confirm unsubscribe · your preferences",
    "配信を停止する範囲を選んでください。トピックの停止はメール・LINE・サイト上のメッセージのすべてに適用されます。",
    "Choose what to stop. Leaving a topic applies to email, LINE and on-site messages alike.",
)
TOPIC_UNKNOWN = Page(
    400,
    "トピックが見つかりません",
    "This topic is not offered",
    "選ばれたトピックは現在ありません。何も変更していません。",
    "The topic chosen is not offered any more. Nothing was changed.",
)


def _form(fields: dict[str, str], ja: str, en: str, css: str = "") -> str:
    """A button posting `fields` back to this URL (the signed token in the URL is the proof: CSRF
    cannot forge it, and GET never changes anything)."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    klass = f' class="{css}"' if css else ""
    return (
        f'<form method="post">{hidden}<button type="submit"{klass}>{escape(ja)}'
        f'<span lang="en">{escape(en)}</span></button></form>'
    )


# The "everything" button keeps the one-click body, so it is exactly what a mail client's button sends.
EVERYTHING_FIELDS = {"List-Unsubscribe": "One-Click", "action": "all"}


def preference_forms(prefs: Preferences) -> str:
    """The choices: only this mail's topic, everything, and each topic with its state (leave, or join
    again). Japanese first, English alongside."""
    parts: list[str] = []
    if prefs.topic is not None and not prefs.left(prefs.topic.id):
        parts.append(
            _form(
                {"action": "leave", "topic": prefs.topic.id},
                f"このトピック（{prefs.topic.label_ja}）のみ配信停止",
                f"Only this topic ({prefs.topic.label_en})",
            )
        )
    if prefs.email_stopped:
        parts.append(
            '<p class="state">メールの配信はすべて停止しています。'
            '<span lang="en">All marketing email is stopped.</span></p>'
        )
    else:
        parts.append(_form(EVERYTHING_FIELDS, "すべて配信停止", "Everything (all marketing email)"))
    if prefs.topics:
        rows = []
        for topic, subscribed in prefs.topics:
            if subscribed:
                state = '配信中 <span lang="en">subscribed</span>'
                button = _form({"action": "leave", "topic": topic.id}, "停止する", "Leave", "quiet")
            else:
                state = '停止中 <span lang="en">left</span>'
                button = _form({"action": "join", "topic": topic.id}, "再開する", "Subscribe again", "quiet")
            rows.append(
                f'<li><span>{escape(topic.label_ja)} <span lang="en">{escape(topic.label_en)}</span>'
                f'<br><span class="state">{state}</span></span>{button}</li>'
            )
        parts.append(f'<h2>トピック <span lang="en">Topics</span></h2><ul>{"".join(rows)}</ul>')
    return "".join(parts)


def topic_result_page(result: TopicResult, label_ja: str, label_en: str) -> Page:
    """What a topic choice did, in words naming the topic."""
    if result is TopicResult.LEFT:
        return Page(
            200,
            "配信を停止しました",
            "You have left this topic",
            f"「{label_ja}」のお知らせは今後お送りしません。ほかのトピックの配信は続きます。",
            f"We will not send you “{label_en}” any more. Other topics continue.",
        )
    if result is TopicResult.JOINED:
        return Page(
            200,
            "配信を再開しました",
            "You are subscribed again",
            f"「{label_ja}」のお知らせを再びお送りします。",
            f"We will send you “{label_en}” again.",
        )
    if result is TopicResult.ALREADY:
        return Page(
            200,
            "変更はありません",
            "Nothing to change",
            f"「{label_ja}」の配信設定は、すでにそのとおりです。",
            f"Your choice about “{label_en}” was already so.",
        )
    if result is TopicResult.TEST:
        return TEST
    if result is TopicResult.UNKNOWN:
        return UNKNOWN
    return TOPIC_UNKNOWN


BACK_LINK = '<p><a href="">配信設定に戻る <span lang="en">Back to your preferences</span></a></p>'
