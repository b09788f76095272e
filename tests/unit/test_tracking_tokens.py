"""Tracking tokens: they round-trip, stay short and URL-safe, and any change to any part of a token,
a token of another kind or another secret, or a destination other than http(s) is refused."""

from __future__ import annotations

import base64
import json

import pytest
from cems.engagement.config import LOCAL_TRACKING_SECRET, EngagementSettings
from cems.engagement.tokens import (
    MAC_BYTES,
    InvalidToken,
    TokenKind,
    TokenSigner,
    TrackingToken,
    click_url,
    open_url,
    trackable_url,
    unsubscribe_url,
)
from cems.settings import Settings
from pydantic import ValidationError

SIGNER = TokenSigner(lambda: b"test-secret")
CLICK = TrackingToken(
    kind=TokenKind.CLICK,
    dispatch_key="cus_0123456789abcdef0123456789abcdef#welcome#3#mail1",
    customer_id="cus_0123456789abcdef0123456789abcdef",
    channel="email",
    scenario_id="welcome",
    version=3,
    step_id="mail1",
    variant="B",
    url="https://shop.example/items/42?utm_source=cems&q=日本",
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_token_round_trips() -> None:
    signed = SIGNER.sign(CLICK)
    assert SIGNER.verify(signed, TokenKind.CLICK) == CLICK


def test_tokens_are_url_safe_and_short() -> None:
    signed = SIGNER.sign(CLICK)
    assert set(signed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert "=" not in signed and "/" not in signed
    payload = json.loads(base64.urlsafe_b64decode(signed.split(".")[0] + "=="))
    # Short keys, defaults left out.
    assert set(payload) == {"k", "D", "c", "n", "s", "v", "p", "a", "u"}
    assert payload["D"] == "#welcome#3#mail1"  # the dispatch key after the customer id
    assert len(signed.split(".")[1]) == 22  # 16 bytes of MAC


def test_minimal_token_defaults() -> None:
    token = TrackingToken(kind=TokenKind.OPEN, dispatch_key="d1", customer_id="cus_1", channel="email")
    signed = SIGNER.sign(token)
    assert len(signed) < 100
    back = SIGNER.verify(signed, TokenKind.OPEN)
    assert back == token and back.test is False and back.holdout is False and back.url is None


def test_a_dispatch_key_not_starting_with_the_customer_id_is_kept_whole() -> None:
    token = CLICK.model_copy(update={"dispatch_key": "test:abc"})
    payload = json.loads(base64.urlsafe_b64decode(SIGNER.sign(token).split(".")[0] + "=="))
    assert payload["d"] == "test:abc" and "D" not in payload
    assert SIGNER.verify(SIGNER.sign(token), TokenKind.CLICK) == token


def test_a_shared_dispatchs_click_token_names_no_customer() -> None:
    shared = CLICK.model_copy(update={"customer_id": "", "dispatch_key": "spring#r1#announce#0a1b#0000"})
    signed = SIGNER.sign(shared)
    payload = json.loads(base64.urlsafe_b64decode(signed.split(".")[0] + "=="))
    assert "c" not in payload and payload["d"] == "spring#r1#announce#0a1b#0000"
    back = SIGNER.verify(signed, TokenKind.CLICK)
    assert back == shared and back.shared and not CLICK.shared
    # Only a click may name nobody: opens, unsubscribes and confirmations act on a customer.
    with pytest.raises(ValidationError, match="only a click token may name no customer"):
        TrackingToken(kind=TokenKind.UNSUBSCRIBE, dispatch_key="d1", channel="email")


def test_url_helpers() -> None:
    base = "https://t.example.jp"
    signed = SIGNER.sign(CLICK)
    assert click_url(base, SIGNER, CLICK) == f"{base}/r/{signed}"
    opened = CLICK.model_copy(update={"kind": TokenKind.OPEN, "url": None})
    assert open_url(base, SIGNER, opened) == f"{base}/o/{SIGNER.sign(opened)}"
    unsub = CLICK.model_copy(update={"kind": TokenKind.UNSUBSCRIBE, "url": None})
    assert unsubscribe_url(base, SIGNER, unsub) == f"{base}/u/{SIGNER.sign(unsub)}"


def test_every_changed_character_is_refused() -> None:
    signed = SIGNER.sign(CLICK)
    for index, char in enumerate(signed):
        if char == ".":
            continue
        replacement = "A" if char != "A" else "B"
        tampered = signed[:index] + replacement + signed[index + 1 :]
        with pytest.raises(InvalidToken):
            SIGNER.verify(tampered, TokenKind.CLICK)


def test_a_changed_payload_with_the_old_mac_is_refused() -> None:
    payload, mac = SIGNER.sign(CLICK).split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=="))
    document["u"] = "https://evil.example/"
    with pytest.raises(InvalidToken) as caught:
        SIGNER.verify(f"{b64(json.dumps(document).encode())}.{mac}", TokenKind.CLICK)
    assert caught.value.code == "invalid_signature"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nodot",
        "a.b.c",
        ".",
        "payload.",
        ".mac",
        "eyJrIjoiYyJ9",  # unsigned payload
        "eyJrIjoiYyJ9.+/==",  # not base64url
        "x" * 5000,
    ],
)
def test_malformed_and_unsigned_tokens_are_refused(value: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        SIGNER.verify(value, TokenKind.CLICK)
    assert value[:20] not in str(caught.value) or not value


def test_a_truncated_token_is_refused() -> None:
    signed = SIGNER.sign(CLICK)
    for cut in (1, 5, len(signed) // 2, len(signed) - 1):
        with pytest.raises(InvalidToken):
            SIGNER.verify(signed[:cut], TokenKind.CLICK)
    payload, mac = signed.split(".")
    truncated_mac = b64(base64.urlsafe_b64decode(mac + "==")[: MAC_BYTES - 1])
    with pytest.raises(InvalidToken):
        SIGNER.verify(f"{payload}.{truncated_mac}", TokenKind.CLICK)


def test_another_secret_is_refused() -> None:
    other = TokenSigner(lambda: b"another-secret")
    with pytest.raises(InvalidToken) as caught:
        other.verify(SIGNER.sign(CLICK), TokenKind.CLICK)
    assert caught.value.code == "invalid_signature"


def test_a_token_of_another_kind_is_refused() -> None:
    opened = CLICK.model_copy(update={"kind": TokenKind.OPEN, "url": None})
    signed = SIGNER.sign(opened)
    with pytest.raises(InvalidToken) as caught:
        SIGNER.verify(signed, TokenKind.CLICK)
    assert caught.value.code == "wrong_kind"
    with pytest.raises(InvalidToken):
        SIGNER.verify(signed, TokenKind.UNSUBSCRIBE)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)//https://shop.example",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "ftp://shop.example/file",
        "//evil.example/",
        "/relative/path",
        "https://",
        "https:///path-only",
        "https://shop.example/a b",
        "https://shop.example/\r\nSet-Cookie: x=1",
        "https://shop.example\\@evil.example/",
        "",
    ],
)
def test_destinations_other_than_http_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        CLICK.model_copy(update={"url": None}).model_validate({**CLICK.model_dump(), "url": url})


def test_a_signed_payload_with_a_bad_url_is_refused_on_verify() -> None:
    # Even signed with the right secret (e.g. by an older, laxer signer), a javascript: URL never verifies.
    payload = b64(
        json.dumps({"k": "c", "d": "d", "c": "cus_1", "n": "email", "u": "javascript:alert(1)"}).encode()
    )
    signed = f"{payload}.{b64(SIGNER._mac(payload))}"
    with pytest.raises(InvalidToken) as caught:
        SIGNER.verify(signed, TokenKind.CLICK)
    assert caught.value.code == "malformed_token"


def test_url_only_on_clicks() -> None:
    with pytest.raises(ValidationError):
        TrackingToken(kind=TokenKind.CLICK, dispatch_key="d", customer_id="c", channel="line")
    with pytest.raises(ValidationError):
        TrackingToken(
            kind=TokenKind.OPEN, dispatch_key="d", customer_id="c", channel="email", url="https://x.jp"
        )


def test_http_and_https_urls_are_accepted() -> None:
    for url in ("http://shop.example", "https://shop.example:8443/p?q=1#frag", "HTTPS://SHOP.EXAMPLE/"):
        token = CLICK.model_copy(update={"url": None}).model_validate({**CLICK.model_dump(), "url": url})
        assert SIGNER.verify(SIGNER.sign(token), TokenKind.CLICK).url == url


def test_settings_secret_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGE_BASE_URL", "https://t.example.jp/")
    monkeypatch.delenv("CEMS_LOCAL", raising=False)
    monkeypatch.setenv("CEMS_TRACKING_SECRET", "from-env")
    monkeypatch.delenv("TRACKING_SECRET_PARAMETER", raising=False)
    settings = Settings.from_environ().area(EngagementSettings)
    assert settings.base_url == "https://t.example.jp"
    assert settings.secret() == b"from-env"
    # Outside the local stack nothing configured is refused (tests/unit/test_secret_settings.py).
    # The local stack never asks SSM even when a parameter is named.
    monkeypatch.delenv("CEMS_TRACKING_SECRET")
    monkeypatch.setenv("TRACKING_SECRET_PARAMETER", "/cems/dev/tracking-secret")
    monkeypatch.setenv("CEMS_LOCAL", "1")
    assert Settings.from_environ().area(EngagementSettings).secret() == LOCAL_TRACKING_SECRET.encode()


def test_the_secret_is_read_lazily() -> None:
    calls: list[int] = []

    def secret() -> bytes:
        calls.append(1)
        return b"s"

    signer = TokenSigner(secret)
    assert calls == []
    signer.verify(signer.sign(CLICK), TokenKind.CLICK)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("https://shop.example.jp/a?b=1", "https://shop.example.jp/a?b=1"),
        ("  https://shop.example.jp/a  ", "https://shop.example.jp/a"),
        ("https://shop.example.jp/search?q=緑 茶", "https://shop.example.jp/search?q=%E7%B7%91%20%E8%8C%B6"),
        ("https://shop.example.jp/a\n/b", "https://shop.example.jp/a/b"),
        ("https://shop.example.jp/%E7%B7%91#top", "https://shop.example.jp/%E7%B7%91#top"),
        ("HTTP://SHOP.EXAMPLE.JP/", "HTTP://SHOP.EXAMPLE.JP/"),
        ("javascript:alert(1)", None),
        ("mailto:info@shop.example.jp", None),
        ("/relative", None),
        ("https://", None),
        ("https://shop.example.jp\\@evil.example/", None),
        ("https://shop.example.jp/\x00", None),
    ],
)
def test_trackable_url(href: str, expected: str | None) -> None:
    assert trackable_url(href) == expected
    if expected is not None:
        token = CLICK.model_validate({**CLICK.model_dump(), "url": expected})
        assert SIGNER.verify(SIGNER.sign(token), TokenKind.CLICK).url == expected
