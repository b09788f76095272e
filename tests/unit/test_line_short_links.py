"""Short tracked links for URLs written in LINE texts (issue 13): the code (cems.engagement.tokens),
the dispatch that carries code -> token to its sender (cems.line.channel, cems.line.multicast with
wiring's click tracker), the sender storing them before LINE is called (cems.line.sender), and the
click tracker's lookup (cems.engagement.engage). The whole path on moto:
tests/integration/test_line_text_links.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.engagement.engage import Engagement
from cems.engagement.tokens import (
    SHORT_CODE_ALPHABET,
    SHORT_CODE_LENGTH,
    SHORT_CODE_PATTERN,
    TokenKind,
    TokenSigner,
    TrackingToken,
    is_click_url,
    is_short_code,
)
from cems.line import dispatch as line_dispatch
from cems.line.channel import queue_body
from cems.line.deliveries import UnitStatus
from cems.line.dispatch import MAX_TEXT_LENGTH, LineDispatch
from cems.line.links import track_links
from cems.line.multicast import queue_bodies
from cems.line.sender import LineSender
from cems.models import Channel, ChannelState, Profile
from cems.scenario.engine import Dispatch
from cems.settings import Settings
from cems.wiring import line_link_tracker

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.line import Answer, InMemoryLineDeliveries, InMemoryLineGateway, InMemoryShortLinks

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
BASE = "https://links.example.jp"
PAGE = "https://shop.example.jp/shincha?utm_source=line&utm_medium=push&utm_campaign=2026-autumn"
TEXT = f"新茶が入荷しました。「{PAGE}」からどうぞ。"
SHORT = re.compile(re.escape(BASE) + r"/r/([0-9A-Za-z]{16})(?![0-9A-Za-z])")
SIGNER = TokenSigner(lambda: b"unit-test-secret")


@pytest.fixture(autouse=True)
def frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


def settings() -> Settings:
    return Settings({"ENGAGE_BASE_URL": BASE, "CEMS_TRACKING_SECRET": "unit-test-secret"})


def click(
    customer_id: str = "cus_1", dispatch_key: str = "cus_1#s#v1#a#e1", url: str = PAGE, **extra: Any
) -> TrackingToken:
    return TrackingToken(
        kind=TokenKind.CLICK,
        dispatch_key=dispatch_key,
        customer_id=customer_id,
        channel=Channel.LINE,
        url=url,
        **extra,
    )


def dispatch(customer_id: str, messages: list[dict[str, Any]] | None = None, **extra: Any) -> Dispatch:
    key = f"{customer_id}#shincha-news#v1#announce#e1"
    return Dispatch(
        key=key,
        channel=Channel.LINE,
        customer_id=customer_id,
        scenario_id="shincha-news",
        version=1,
        step_id="announce",
        entry=1,
        messages={
            Channel.LINE: LineDispatch(
                idempotency_key=key,
                recipients=[customer_id],
                messages=messages or [{"type": "text", "text": TEXT}],
                scenario_id="shincha-news",
                version=1,
                step_id="announce",
            )
        },
        **extra,
    )


# --- the code -------------------------------------------------------------------------------------


def test_a_code_is_16_base62_characters_at_least_64_random_bits() -> None:
    code = SIGNER.short_code(click())
    assert len(code) == SHORT_CODE_LENGTH == 16
    assert set(code) <= set(SHORT_CODE_ALPHABET) and len(SHORT_CODE_ALPHABET) == 62
    assert SHORT_CODE_LENGTH * 5.954 > 64  # log2(62) bits a character
    assert re.fullmatch(SHORT_CODE_PATTERN, code) and is_short_code(code)
    # The dispatch model checks the same pattern (written out there, not imported).
    pattern = line_dispatch.LineDispatch.model_fields["short_links"].annotation
    assert SHORT_CODE_PATTERN in repr(pattern)


def test_a_code_is_the_same_for_the_same_link_of_the_same_dispatch_whenever_it_is_made() -> None:
    first = SIGNER.short_code(click(expires_at=1_900_000_000))
    assert SIGNER.short_code(click(expires_at=1_900_000_060)) == first  # a redo a minute later
    others = {
        SIGNER.short_code(click(customer_id="cus_2", dispatch_key="cus_2#s#v1#a#e1")),  # another push
        SIGNER.short_code(click(dispatch_key="cus_1#s#v1#a#e2")),  # the next entry's
        SIGNER.short_code(click(url=PAGE + "&x=1")),  # another link of the message
        SIGNER.short_code(click(customer_id="", dispatch_key="b#announce#d#0000")),  # a shared one
        TokenSigner(lambda: b"another-secret").short_code(click()),  # nobody can derive it without it
    }
    assert first not in others and len(others) == 5


def test_codes_spread_over_the_whole_alphabet() -> None:
    codes = [SIGNER.short_code(click(url=f"https://shop.example.jp/{n}")) for n in range(400)]
    assert len(set(codes)) == 400
    assert set("".join(codes)) == set(SHORT_CODE_ALPHABET)


def test_a_short_click_url_is_a_click_url_and_a_token_is_never_a_code() -> None:
    code = SIGNER.short_code(click())
    assert is_click_url(f"{BASE}/r/{code}")
    assert is_click_url(f"https://engage.example.jp/prod/r/{code}")
    assert not is_click_url(f"{BASE}/r/{code}?utm=1")
    assert not is_click_url(f"{BASE}/r/{code}x")
    assert not is_click_url("https://shop.example.jp/r/sale")
    assert not is_short_code(SIGNER.sign(click()))
    assert not is_short_code(code + "-") and not is_short_code(code[:-1])


# --- the dispatch carries its short links ----------------------------------------------------------


def test_a_text_url_gets_the_short_link_and_a_uri_action_keeps_the_signed_one() -> None:
    buttons = {
        "type": "template",
        "altText": "新茶",
        "template": {
            "type": "buttons",
            "text": "新茶",
            "actions": [{"type": "uri", "label": "見る", "uri": PAGE}],
        },
    }
    body = LineDispatch.model_validate_json(
        queue_body(
            dispatch("cus_1", [{"type": "text", "text": TEXT}, buttons]), line_link_tracker(settings())
        )
    )
    text, template = body.messages
    [code] = SHORT.findall(text["text"])
    assert text["text"] == TEXT.replace(PAGE, f"{BASE}/r/{code}")
    assert len(text["text"]) < len(TEXT)  # shorter than the shop's own URL here
    # The button's link is the long signed token: hidden behind the button, no lookup on a tap.
    uri = template["template"]["actions"][0]["uri"]
    assert uri.startswith(f"{BASE}/r/eyJ") and len(uri) > 250
    # The dispatch carries what the sender stores: the code's signed token, its expiry as TTL.
    assert list(body.short_links) == [code]
    link = body.short_links[code]
    token = SIGNER.verify(link.token, TokenKind.CLICK)
    assert (token.customer_id, token.dispatch_key, token.url) == ("cus_1", dispatch("cus_1").key, PAGE)
    assert link.expires_at == token.expires_at == int((NOW + timedelta(days=400)).timestamp())


def test_the_same_dispatch_made_again_later_carries_the_same_codes_other_customers_their_own() -> None:
    links = line_link_tracker(settings())
    first = LineDispatch.model_validate_json(queue_body(dispatch("cus_1"), links))
    clock.freeze(NOW + timedelta(minutes=3))  # a redone batch
    again = LineDispatch.model_validate_json(queue_body(dispatch("cus_1"), links))
    other = LineDispatch.model_validate_json(queue_body(dispatch("cus_2"), links))
    assert again.messages == first.messages and list(again.short_links) == list(first.short_links)
    assert set(other.short_links).isdisjoint(first.short_links)


def test_a_multicast_carries_one_short_link_per_link_whatever_its_recipients() -> None:
    batch = [dispatch(f"cus_{n}", per_customer_clicks=False) for n in range(1, 4)]
    [queued] = queue_bodies(
        batch, "shincha#r1#s00#p0000", line_link_tracker(settings()), frozenset({Channel.LINE})
    )
    body = LineDispatch.model_validate_json(queued.body)
    assert len(body.recipients) == 3
    [(code, link)] = body.short_links.items()
    assert SHORT.findall(body.messages[0]["text"]) == [code]
    token = SIGNER.verify(link.token, TokenKind.CLICK)
    assert token.shared and token.dispatch_key == body.idempotency_key


def test_a_url_left_as_written_by_the_length_rule_carries_no_short_link() -> None:
    head = f"http://a.jp {PAGE}。"
    written = head + "茶" * (MAX_TEXT_LENGTH - len(head) - 10)  # 10 characters of room
    body = LineDispatch.model_validate_json(
        queue_body(dispatch("cus_1", [{"type": "text", "text": written}]), line_link_tracker(settings()))
    )
    # The first URL would grow by more than the room (it is shorter than a short link), so it and
    # every URL after it stay as written, even the second, which would have shrunk: the rule is
    # kept as it was. Its link was made, and is not carried: nothing is stored for it.
    assert body.messages[0]["text"] == written
    assert body.short_links == {}


def test_short_links_fit_where_signed_ones_did_not() -> None:
    urls = [f"https://shop.example.jp/items/{n:04d}?utm_source=line" for n in range(40)]
    listed = "\n".join(f"{n}. {url}" for n, url in enumerate(urls))
    written = listed + "\n" + "茶" * (MAX_TEXT_LENGTH - len(listed) - 1 - 1000)  # room for a few signed links
    links = line_link_tracker(settings())
    body = LineDispatch.model_validate_json(
        queue_body(dispatch("cus_1", [{"type": "text", "text": written}]), links)
    )
    assert len(SHORT.findall(body.messages[0]["text"])) == 40 == len(body.short_links)
    # The signed form (what text URLs were before) leaves most of them as written.
    d = dispatch("cus_1")
    [signed] = track_links([{"type": "text", "text": written}], lambda url: links(d, url))
    assert signed["text"].count("/r/eyJ") < 10


# --- the sender stores them before LINE is called ---------------------------------------------------


class World:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.deliveries = InMemoryLineDeliveries()
        self.line = InMemoryLineGateway()
        self.links = InMemoryShortLinks()
        self.sender = LineSender(
            self.customers, self.deliveries, self.line, retry_base_seconds=1, short_links=self.links
        )
        for n in (1, 2):
            self.customers.put_profile(
                Profile(
                    customer_id=f"cus_{n}",
                    line_user_id=f"U{n:032x}",
                    channels={"line": ChannelState(reachable=True, consent=True, updated_at=NOW)},
                    first_seen_at=NOW,
                    updated_at=NOW,
                )
            )


def test_the_sender_stores_the_links_before_it_calls_line_and_a_redelivery_stores_nothing() -> None:
    world = World()
    seen: list[int] = []
    world.line.on_call = lambda: seen.append(len(world.links.items))
    body = queue_body(dispatch("cus_1"), line_link_tracker(settings()))
    report = world.sender.handle(body)
    assert seen == [1] and report.sent == 1 and report.short_links_stored == 1
    [(code, (token, _))] = world.links.items.items()
    assert token == LineDispatch.model_validate_json(body).short_links[code].token
    # SQS delivers it again: everything is sent, nothing is written.
    again = world.sender.handle(body, receive_count=2)
    assert again.already_done == 1 and world.links.writes == 1 and len(world.line.calls) == 1


def test_a_retry_after_line_failed_asks_again_and_changes_nothing() -> None:
    world = World()
    body = queue_body(dispatch("cus_1"), line_link_tracker(settings()))
    world.line.answer_next(Answer(500))
    first = world.sender.handle(body)
    stored = dict(world.links.items)
    assert first.retries == 1 and first.short_links_stored == 1
    second = world.sender.handle(body, receive_count=2)
    assert second.sent == 1 and second.short_links_stored == 0
    assert world.links.items == stored and world.links.writes == 2


def test_links_that_cannot_be_stored_hold_the_message_back() -> None:
    world = World()
    world.links.fail = True
    body = queue_body(dispatch("cus_1"), line_link_tracker(settings()))
    report = world.sender.handle(body)
    assert world.line.calls == [] and report.retry_after is not None and report.sent == 0
    assert all(
        u.status is not UnitStatus.SENT for u in world.deliveries.state(dispatch("cus_1").key).units.values()
    )
    world.links.fail = False
    assert world.sender.handle(body, receive_count=2).sent == 1


def test_a_dispatch_without_short_links_writes_nothing() -> None:
    world = World()
    body = LineDispatch.model_validate_json(
        queue_body(dispatch("cus_1", [{"type": "text", "text": "新茶です"}]), line_link_tracker(settings()))
    )
    assert body.short_links == {} and '"short_links"' not in body.to_sqs_body()  # old bodies' shape
    assert world.sender.handle(body.to_sqs_body()).sent == 1 and world.links.writes == 0


# --- the click tracker's lookup ---------------------------------------------------------------------


class NoCustomers:
    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None:
        return None


def test_a_short_code_resolves_to_its_stored_token_and_an_unknown_one_to_nothing() -> None:
    store = InMemoryShortLinks()
    token = click(expires_at=int((NOW + timedelta(days=400)).timestamp()))
    code = SIGNER.short_code(token)
    store.put(code, SIGNER.sign(token), token.expires_at or 0)
    engagement = Engagement(SIGNER, None, NoCustomers(), None, None, store)  # type: ignore[arg-type]
    found = engagement.short_click(code)
    assert found is not None and found[0].url == PAGE
    assert engagement.short_click("0" * 16) is None
