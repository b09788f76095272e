"""A scenario runner on the in-memory fakes, with what its behaviour tests arrange and read: uploaded
scenarios, customers with LINE contacts, stored events, and the dispatches the senders would get."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from cems import clock
from cems.models import ChannelState, MessageType, OrderSummary, Profile, StoredEvent
from cems.scenario import engine
from cems.scenario.model import FrequencyCaps, Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import ScenarioRunner

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.journeys import InMemoryCapStore, InMemoryEnrolmentStore, InMemoryScenarioStore
from tests.fakes.scenario_io import InMemoryReportCounters, RecordingDispatchSink, RecordingRichMenus

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"


def line_user_id(customer_id: str) -> str:
    """A LINE user id of the right shape, derived from the customer id."""
    return "U" + customer_id.encode().hex().ljust(32, "0")[:32]


class JourneyWorld:
    """The runner's stores and ends, all in memory (one runner built on them; `another_runner()` for
    a second process racing the first)."""

    def __init__(self, *, rich_menus: bool = True) -> None:
        self.scenarios = InMemoryScenarioStore()
        self.enrolments = InMemoryEnrolmentStore[engine.Enrolment]()
        self.caps = InMemoryCapStore()
        self.customers = InMemoryCustomers()
        self.sink = RecordingDispatchSink()
        self.counters = InMemoryReportCounters()
        self.rich_menus = RecordingRichMenus() if rich_menus else None
        self.limits = FrequencyCaps()
        self.runner = self.another_runner()
        self._messages = 0

    def another_runner(self, limits: FrequencyCaps | None = None) -> ScenarioRunner:
        return ScenarioRunner(
            self.scenarios,
            self.enrolments,
            self.caps,
            self.customers,
            self.customers,
            self.sink,
            limits or self.limits,
            rich_menus=self.rich_menus,
            counters=self.counters,
        )

    # -- arranging ------------------------------------------------------------------------------------

    def upload(self, document: dict[str, Any] | str) -> Scenario:
        """A scenario document, or the name of a file in examples/scenarios, stored as a new version."""
        if isinstance(document, str):
            document = json.loads((EXAMPLES / document).read_text(encoding="utf-8"))
        assert isinstance(document, dict)
        scenario = Scenario.model_validate(document)
        etag = f"etag-{len(self.scenarios.versions_stored)}"
        self.scenarios.put_version(scenario, document, ScenarioSource(f"scenarios/{scenario.id}.json", etag))
        return scenario

    def customer(self, customer_id: str, *, line: bool = True, reachable: bool = True) -> str:
        """A profile first seen 30 days ago, with a consenting LINE contact unless `line` is off."""
        now = clock.now()
        self.customers.put_profile(
            Profile(
                customer_id=customer_id,
                line_user_id=line_user_id(customer_id) if line else None,
                channels={"line": ChannelState(reachable=reachable, consent=True, updated_at=now)}
                if line
                else {},
                first_seen_at=now - timedelta(days=30),
                updated_at=now,
            )
        )
        return customer_id

    def profile(self, customer_id: str) -> Profile:
        profile = self.customers.profile(customer_id)
        assert profile is not None
        return profile

    def event(
        self, customer_id: str, event_name: str, /, site_id: str = "shop", **properties: Any
    ) -> StoredEvent:
        """A track event stored now (by CEMS's clock), as collect stores it."""
        self._messages += 1
        at = clock.now()
        return self.customers.put_event(
            StoredEvent(
                customer_id=customer_id,
                site_id=site_id,
                type=MessageType.TRACK,
                message_id=f"msg-{self._messages}",
                event=event_name,
                timestamp=at,
                received_at=at,
                properties=properties,
            )
        )

    def purchase(self, customer_id: str, order_id: str, amount: int = 3000) -> StoredEvent:
        """An order as ingest stores it: the order on the profile, then the event."""
        profile = self.profile(customer_id)
        orders = {**profile.orders, order_id: OrderSummary(at=clock.now(), amount=Decimal(amount))}
        self.customers.put_profile(profile.model_copy(update={"orders": orders}))
        return self.event(customer_id, "Order Completed", order_id=order_id, revenue=amount)

    # -- reading --------------------------------------------------------------------------------------

    def sent(self) -> list[dict[str, Any]]:
        """The LINE dispatches enqueued since the last call."""
        return self.sink.take_line()

    def sent_keys(self) -> list[str]:
        return sorted(d["idempotency_key"] for d in self.sent())

    def enrolment(self, customer_id: str, scenario_id: str) -> engine.Enrolment:
        found = self.enrolments.get(customer_id, scenario_id)
        assert found is not None
        return found

    def at(self, moment: datetime) -> None:
        clock.freeze(moment)
