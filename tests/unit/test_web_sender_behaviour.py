"""The web sender's rules on in-memory ports (tests/fakes; the inbox is held to the DynamoDB adapter's
contract by tests/integration/test_web_inbox_contract.py): a dispatch is written into the visitor's
inbox once however often SQS delivers it, only for a customer seen on the site and not opted out,
and a test send goes to its preview inbox only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cems import clock
from cems.models import Channel, ChannelState, Profile
from cems.reports.counters import Metric, ReportCell
from cems.web.dispatch import WebDispatch, WebMessage
from cems.web.inbox import InboxOwner, due
from cems.web.sender import CLAIM_LEASE, PREVIEW_LIFETIME, UNIT, Status, WebSender

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.delivery_claims import InMemoryDeliveryClaims
from tests.fakes.scenario_io import InMemoryReportCounters
from tests.fakes.web import InMemoryWebInbox

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
KEY = "cart-abandonment-web#remind#cus_1#e1"
MESSAGE = WebMessage(
    kind="banner",
    position="top",
    title="カートに商品が残っています",
    body="在庫があるうちにどうぞ",
    buttons=[{"label": "カートを見る", "url": "https://shop.example.jp/cart"}],
    expires_seconds=3 * 86400,
)
CELL = ReportCell("cart-abandonment-web", 1, "remind", None, channel="web")


class World:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.claims = InMemoryDeliveryClaims()
        self.inbox = InMemoryWebInbox()
        self.counters = InMemoryReportCounters()
        self.sender = WebSender(self.customers, self.claims, self.inbox, self.counters)

    def visitor(self, customer_id: str = "cus_1", *, anonymous: bool = True, **update: object) -> Profile:
        profile = Profile(
            customer_id=customer_id,
            first_seen_at=NOW - timedelta(days=3),
            updated_at=NOW,
            anonymous_ids={f"a-{customer_id}"} if anonymous else set(),
        )
        return self.customers.put_profile(profile.model_copy(update=update))


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture
def world() -> World:
    return World()


def dispatch(key: str = KEY, customer_id: str = "cus_1", **extra: object) -> str:
    return WebDispatch(
        idempotency_key=key,
        customer_id=customer_id,
        message=MESSAGE,
        scenario_id="cart-abandonment-web",
        version=1,
        step_id="remind",
        **extra,  # type: ignore[arg-type]
    ).to_sqs_body()


def test_a_dispatch_puts_the_rendered_message_into_the_customers_inbox_until_it_expires(world: World) -> None:
    world.visitor()
    report = world.sender.handle(dispatch())
    assert report.status is Status.WRITTEN and not report.already_done
    [item] = world.inbox.items(InboxOwner.customer("cus_1"), 10)
    assert item.message == MESSAGE and item.dispatch_key == KEY
    assert item.written_at == NOW and item.expires_at == NOW + timedelta(days=3)
    assert world.claims.read(Channel.WEB, KEY, UNIT)["status"] == "written"  # type: ignore[index]
    assert report.metrics() == {"WebWritten": 1, "WebSkipped": 0, "WebRetries": 0}
    # Sent (IMP) is counted when the tag shows it, not when it waits in the inbox.
    assert world.counters.count(CELL, Metric.SENT) == 0


def test_a_redelivered_sqs_message_writes_the_inbox_once(world: World) -> None:
    world.visitor()
    first = world.sender.handle(dispatch())
    again = world.sender.handle(dispatch(), receive_count=2)
    assert first.status is Status.WRITTEN and again.already_done
    assert world.inbox.puts == 1 and len(world.inbox.stored) == 1
    assert again.metrics()["WebWritten"] == 0


def test_a_dismissed_message_is_not_brought_back_by_a_claim_retaken_after_its_lease(world: World) -> None:
    world.visitor()
    world.sender.handle(dispatch())
    owner = InboxOwner.customer("cus_1")
    assert world.inbox.mark(owner, KEY, "dismissed_at", NOW)
    # A worker died after the write and before its outcome: the claim is still `writing`.
    claim = world.claims.claims[(Channel.WEB, KEY, UNIT)]
    claim.update(status="writing", lease_until=clock.iso(NOW))
    clock.freeze(NOW + CLAIM_LEASE)
    report = world.sender.handle(dispatch(), receive_count=2)
    assert report.status is Status.WRITTEN and report.already_done
    assert due(world.inbox.items(owner, 10), "https://shop.example.jp/", clock.now()) is None


def test_a_claim_another_worker_holds_comes_back_after_its_lease(world: World) -> None:
    world.visitor()
    world.claims.claim(Channel.WEB, KEY, UNIT, "writing", fields={}, lease=CLAIM_LEASE)
    report = world.sender.handle(dispatch())
    assert report.status is Status.WRITING and report.retry_after == int(CLAIM_LEASE.total_seconds()) + 1
    assert world.inbox.puts == 0


def test_a_failed_write_gives_the_claim_back_and_the_next_delivery_writes(world: World) -> None:
    world.visitor()
    world.inbox.fail_puts = 1
    failed = world.sender.handle(dispatch())
    assert failed.status is Status.RETRY and failed.retry_after is not None
    assert failed.metrics()["WebRetries"] == 1
    retried = world.sender.handle(dispatch(), receive_count=2)
    assert retried.status is Status.WRITTEN and not retried.already_done
    assert len(world.inbox.stored) == 1


@pytest.mark.parametrize(
    ("arrange", "reason"),
    [
        (lambda w: None, "no_profile"),
        # A LINE friend never seen on the site: no anonymous id, so no tag could ever fetch it.
        (lambda w: w.visitor(anonymous=False), "unreachable"),
        # A refusal of on-site messages (or of everything) is a web channel state without consent.
        (
            lambda w: w.visitor(
                channels={Channel.WEB: ChannelState(reachable=True, consent=False, updated_at=NOW)}
            ),
            "unreachable",
        ),
    ],
    ids=["erased", "never-seen-on-the-site", "opted-out"],
)
def test_who_is_never_written_to_is_skipped_and_counted_suppressed_once(
    world: World, arrange: object, reason: str
) -> None:
    arrange(world)  # type: ignore[operator]
    report = world.sender.handle(dispatch())
    again = world.sender.handle(dispatch(), receive_count=2)
    assert report.status is Status.SKIPPED and report.skip_reason == reason
    assert again.already_done
    assert world.inbox.stored == {}
    assert world.counters.count(CELL, Metric.SUPPRESSED) == 1


def test_an_anonymous_visitor_with_no_line_and_no_email_is_written_to(world: World) -> None:
    world.visitor("cus_anon")
    report = world.sender.handle(dispatch(key="k-anon", customer_id="cus_anon"))
    assert report.status is Status.WRITTEN
    assert world.inbox.items(InboxOwner.customer("cus_anon"), 10)


def test_a_test_send_goes_to_its_preview_inbox_only_and_is_never_counted(world: World) -> None:
    token = "p" * 32
    body = dispatch(
        key="test#cart-abandonment-web#remind#0001",
        customer_id="cus_test",  # the sample customer: no profile, and none is needed
        test=True,
        preview_token=token,
        preview_page="https://shop.example.jp/",
    )
    report = world.sender.handle(body)
    assert report.status is Status.WRITTEN and report.metrics()["WebTestWritten"] == 1
    [item] = world.inbox.items(InboxOwner.of_preview(token), 10)
    assert item.test and item.expires_at == NOW + PREVIEW_LIFETIME
    assert world.inbox.items(InboxOwner.customer("cus_test"), 10) == []
    # The token itself is stored nowhere: its preview inbox is keyed by its hash.
    assert token not in repr(world.inbox.stored) and token not in repr(report)
    assert world.counters.counts == {}


def test_an_invalid_dispatch_is_reported_and_dropped(world: World) -> None:
    report = world.sender.handle('{"idempotency_key": "k", "customer_id": "c", "message": {"kind": "popup"}}')
    assert report.invalid and report.metrics() == {"WebDispatchesInvalid": 1}
    assert all("popup" not in r for r in report.failure_reasons)
    assert world.inbox.puts == 0
