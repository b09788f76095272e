"""The email sender's rules on in-memory ports (tests/fakes; the delivery records and suppression list
are held to the DynamoDB adapters' contract by tests/integration/test_sender_stores_contract.py): the
mail it writes, each dispatch mailed at most once, what SES's answers leave behind, and who is never
mailed. The send_email handler (SQS batches, backoff, metrics, logs, the sample events, SES under
moto) is tested in tests/integration/test_send_email.py."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from cems import clock
from cems.email.compose import SignedLinks
from cems.email.config import EmailSettings
from cems.email.dispatch import EmailDispatch
from cems.email.sender import CLAIM_LEASE, EmailSender, SesResult, Status
from cems.engagement.ses_events import DispatchTags
from cems.engagement.tokens import TokenKind, TokenSigner
from cems.models import ChannelState, Profile

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.email import InMemoryEmailDeliveries, InMemoryMailGateway, InMemorySuppressions
from tests.fakes.scenario_io import InMemoryReportCounters

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SENDER = "shop@midori-tea.example.jp"
SECRET = "unit-tracking-secret"
BASE = "https://engage.midori-tea.example.jp"
HTML = (
    "<html><body><p>{name}様、新茶のご案内です。</p>"
    '<p><a href="https://shop.example.jp/products/shincha">見てみる</a></p></body></html>'
)
SETTINGS = EmailSettings(
    from_address=SENDER,
    from_name="茶寮みどり",
    postal_address="〒604-8005 京都府京都市中京区恵比須町 1-2",
    contact="075-000-0000",
    configuration_set="cems-dev",
    engage_base_url=BASE,
    retry_base_seconds=2.0,
)


def address(n: int) -> str:
    return f"customer{n:04d}@example.com"


class MailWorld:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.suppressions = InMemorySuppressions()
        self.deliveries = InMemoryEmailDeliveries()
        self.counters = InMemoryReportCounters()
        self.ses = InMemoryMailGateway()
        signer = TokenSigner(lambda: SECRET.encode())
        self.sender = EmailSender(
            SETTINGS,
            self.customers,
            self.suppressions,
            self.deliveries,
            self.counters,
            self.ses,
            lambda dispatch: SignedLinks(BASE, signer, dispatch),
        )

    def customer(
        self, n: int, *, consent: bool = True, email: str | None = "default", reachable: bool = True
    ) -> str:
        customer_id = f"cus_{n:06d}"
        traits: dict[str, Any] = {"name": f"顧客{n}"}
        if email is not None:
            traits["email"] = address(n) if email == "default" else email
        state = ChannelState(reachable=reachable, consent=consent, updated_at=clock.now(), reason="identify")
        self.customers.put_profile(
            Profile(
                customer_id=customer_id,
                traits=traits,
                channels={"email": state},
                first_seen_at=NOW,
                updated_at=clock.now(),
            )
        )
        return customer_id

    def mails(self) -> list[tuple[str, EmailMessage]]:
        return [(mail.to_address, mail.message) for mail in self.ses.sent]

    def record(self, key: str) -> dict[str, Any]:
        record = self.deliveries.get(key)
        assert record is not None
        return record

    def counts(self, scenario_id: str = "scn_shincha") -> dict[str, int]:
        found: Counter[str] = Counter()
        for _, counts in self.counters.cells(scenario_id):
            found.update({k: int(v) for k, v in counts.items()})
        return dict(found)


@pytest.fixture
def world() -> Iterator[MailWorld]:
    clock.freeze(NOW)
    yield MailWorld()
    clock.reset()


def dispatch(key: str, customer_id: str, **extra: Any) -> str:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "customer_id": customer_id,
        "subject": "新茶のご案内",
        "html": HTML.format(name=customer_id),
        "text": f"{customer_id}様、新茶のご案内です。\nhttps://shop.example.jp/products/shincha\n",
        "scenario_id": "scn_shincha",
        "version": 1,
        "step_id": "step_1",
        "variant": "A",
    }
    return EmailDispatch.model_validate(values | extra).to_sqs_body()


def verify(value: str, kind: TokenKind) -> Any:
    return TokenSigner(lambda: SECRET.encode()).verify(value, kind)


# ---------------------------------------------------------------------------------------- the mail


def test_the_mail_carries_unsubscribe_headers_footer_tracked_links_and_pixel(world: MailWorld) -> None:
    customer = world.customer(1)
    report = world.sender.handle(dispatch("scn_shincha#step_1#cus_000001", customer))
    assert report.status is Status.SENT and report.links_tracked == 2
    [(to, mail)] = world.mails()
    assert to == address(1)
    assert str(mail["From"]) == f"茶寮みどり <{SENDER}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(rf"<{re.escape(BASE)}/u/(\S+)>", str(mail["List-Unsubscribe"]))
    assert unsubscribe is not None
    assert verify(unsubscribe.group(1), TokenKind.UNSUBSCRIBE).customer_id == customer
    text_part, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, html = text_part.get_content(), html_part.get_content()
    for body in (text, html):
        assert "〒604-8005 京都府京都市中京区恵比須町 1-2" in body and "075-000-0000" in body
        assert "配信を停止できます" in body and "You may refuse further emails" in body
        assert f"{BASE}/u/{unsubscribe.group(1)}" in body
        clicks = re.findall(rf"{re.escape(BASE)}/r/([A-Za-z0-9_.-]+)", body)
        assert [verify(c, TokenKind.CLICK).url for c in clicks] == [
            "https://shop.example.jp/products/shincha"
        ]
    pixel = re.search(rf'<img src="{re.escape(BASE)}/o/([A-Za-z0-9_.-]+)" width="1" height="1" alt=""', html)
    assert pixel is not None and verify(pixel.group(1), TokenKind.OPEN).step_id == "step_1"
    record = world.record("scn_shincha#step_1#cus_000001")
    assert record["status"] == "sent" and record["ses_message_id"]
    assert world.counts() == {"sent": 1}


def test_tracking_turned_off_leaves_links_and_adds_no_pixel(world: MailWorld) -> None:
    customer = world.customer(1)
    world.sender.handle(dispatch("plain-links", customer, track_clicks=False, track_opens=False))
    [(_, mail)] = world.mails()
    html_part = mail.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert f"{BASE}/r/" not in html and f"{BASE}/o/" not in html
    assert 'href="https://shop.example.jp/products/shincha"' in html
    assert mail["List-Unsubscribe"] and f"{BASE}/u/" in html


def test_a_test_send_is_marked_needs_no_consent_and_counts_nothing(world: MailWorld) -> None:
    world.sender.handle(
        dispatch("test#step_1", "sample", test=True, to_address="staff@midori-tea.example.jp")
    )
    [(to, mail)] = world.mails()
    assert to == "staff@midori-tea.example.jp"
    assert str(mail["Subject"]) == "[テスト/TEST] 新茶のご案内"
    assert mail["X-CEMS-Test"] == "1"
    assert world.counts() == {}
    # Suppression still applies to a test recipient.
    world.suppressions.suppress("Staff@midori-tea.example.jp ", "complaint")
    world.sender.handle(
        dispatch("test#step_1#2", "sample", test=True, to_address="staff@midori-tea.example.jp")
    )
    assert len(world.mails()) == 1
    assert world.record("test#step_1#2")["reason"] == "suppressed_complaint"


def test_ses_tags_name_the_dispatch_in_the_characters_ses_accepts(world: MailWorld) -> None:
    customer = world.customer(1)
    world.sender.handle(dispatch("scn_shincha#step_1#cus_000001", customer, variant="冬 B"))
    [sent] = world.ses.sent
    assert (sent.configuration_set, sent.from_address) == ("cems-dev", SENDER)
    tags = DispatchTags.from_mail({t["Name"]: [t["Value"]] for t in sent.tags})
    assert tags is not None
    assert (tags.dispatch_key, tags.customer_id, tags.scenario_id, tags.version) == (
        "scn_shincha#step_1#cus_000001",
        customer,
        "scn_shincha",
        1,
    )
    # SES's API reference allows only these in tag names and values.
    for tag in sent.tags:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", tag["Name"]), tag["Name"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", tag["Value"]), tag["Value"]


# ------------------------------------------------------------------------------------ at most once


def test_the_same_dispatch_handled_three_times_is_mailed_and_counted_once(world: MailWorld) -> None:
    body = dispatch("thrice", world.customer(1))
    reports = [world.sender.handle(body, receive_count=n) for n in (1, 2, 3)]
    assert [r.already_done for r in reports] == [False, True, True]
    assert [r.status for r in reports] == [Status.SENT] * 3
    assert world.ses.calls == 1 and len(world.ses.sent) == 1
    assert world.counts() == {"sent": 1}


def test_throttling_is_retried_later_and_then_mailed_once(world: MailWorld) -> None:
    body = dispatch("throttled", world.customer(1))
    world.ses.answer_next(
        SesResult(Status.RETRY, error_code="TooManyRequestsException"),
        SesResult(Status.RETRY, error_code="LimitExceededException"),
    )
    first = world.sender.handle(body)
    assert first.status is Status.RETRY and first.retry_after is not None and first.retry_after >= 1
    assert (world.record("throttled")["status"], world.record("throttled")["error_code"]) == (
        "retry",
        "TooManyRequestsException",
    )
    assert world.sender.handle(body, receive_count=2).status is Status.RETRY
    assert world.sender.handle(body, receive_count=3).status is Status.SENT
    assert world.ses.calls == 3 and len(world.ses.sent) == 1
    record = world.record("throttled")
    assert record["status"] == "sent" and record["attempts"] == 3 and "error_code" not in record
    assert world.counts() == {"sent": 1}


def test_a_permanent_rejection_is_recorded_and_not_retried(world: MailWorld) -> None:
    body = dispatch("rejected", world.customer(1))
    world.ses.answer_next(
        SesResult(Status.FAILED, error_code="MessageRejected", reason="Email address is not verified.")
    )
    assert world.sender.handle(body).status is Status.FAILED
    assert world.sender.handle(body).already_done  # a redelivery does not call SES again
    assert world.ses.calls == 1 and world.ses.sent == []
    record = world.record("rejected")
    assert (record["status"], record["error_code"]) == ("failed", "MessageRejected")
    assert world.counts() == {"failed": 1}


def test_no_answer_from_ses_is_unknown_and_never_sent_again(world: MailWorld) -> None:
    body = dispatch("timed-out", world.customer(1))
    world.ses.answer_next(SesResult(Status.UNKNOWN, error_code="ReadTimeoutError"))
    assert world.sender.handle(body).status is Status.UNKNOWN
    assert world.sender.handle(body).status is Status.UNKNOWN
    assert world.ses.calls == 1
    assert world.record("timed-out")["status"] == "unknown"
    assert world.counts() == {}


def test_a_claim_left_sending_past_its_lease_is_unknown_and_not_resent(world: MailWorld) -> None:
    body = dispatch("died", world.customer(1))
    token, _ = world.deliveries.claim(EmailDispatch.model_validate_json(body), Status.SENDING)  # then it died
    assert token is not None
    clock.advance((CLAIM_LEASE + timedelta(minutes=9)).total_seconds())
    report = world.sender.handle(body)
    assert (report.status, report.error_code) == (Status.UNKNOWN, "ClaimAbandoned")
    assert world.ses.sent == [] and world.record("died")["status"] == "unknown"


def test_a_claim_within_its_lease_makes_this_worker_come_back_after_it(world: MailWorld) -> None:
    body = dispatch("busy", world.customer(1))
    world.deliveries.claim(EmailDispatch.model_validate_json(body), Status.SENDING)  # another worker
    clock.advance(30)
    report = world.sender.handle(body)
    assert report.status is Status.SENDING and report.retry_after == 31
    assert world.ses.calls == 0


# ----------------------------------------------------------------------------- who is never mailed


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda w: w.customer(1, consent=False), "no_consent"),
        (lambda w: w.customer(1, email=None), "no_address"),
        (lambda w: w.customer(1, email="not-an-address"), "invalid_address"),
        (lambda w: w.customer(1, reachable=False), "unreachable"),
        (lambda w: "cus_erased", "no_profile"),
        (
            lambda w: (w.customer(1), w.suppressions.suppress(address(1).upper(), "bounce"))[0],
            "suppressed_bounce",
        ),
    ],
)
def test_nobody_who_may_not_be_mailed_is_mailed(
    world: MailWorld, setup: Callable[[MailWorld], str], reason: str
) -> None:
    body = dispatch("skip", setup(world))
    first, again = world.sender.handle(body), world.sender.handle(body)
    assert (first.status, first.skip_reason) == (Status.SKIPPED, reason)
    assert again.already_done
    assert world.ses.calls == 0
    record = world.record("skip")
    assert (record["status"], record["reason"]) == ("skipped", reason)
    assert world.counts() == {"suppressed": 1}


def test_unsubscribed_after_enqueueing_is_not_mailed(world: MailWorld) -> None:
    body = dispatch("late-unsubscribe", world.customer(1))
    world.customer(1, consent=False)  # the consent changes before the sender runs
    assert world.sender.handle(body).skip_reason == "no_consent"
    assert world.ses.calls == 0


def test_an_invalid_dispatch_is_dropped_with_its_field_paths_only(world: MailWorld) -> None:
    bad = '{"idempotency_key": "x", "customer_id": "c", "to_address": "leak@example.com"}'
    report = world.sender.handle(bad)
    assert report.invalid and report.failure_reasons and "leak@example.com" not in str(report.failure_reasons)
    assert world.sender.handle("not json").invalid
    assert world.ses.calls == 0 and world.deliveries.records == {}
