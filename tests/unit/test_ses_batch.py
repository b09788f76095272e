"""engage's SES events, one invocation's records: unreadable ones are dropped, a failed one fails the
invocation after the others ran, and the metrics come from the report."""

from __future__ import annotations

import json

import pytest
from cems.engagement.engage import SesOutcome
from cems.engagement.ses_batch import SesEventsFailed, apply_ses_events
from cems.engagement.ses_events import SesEvent


def _event(event_type: str, bounce_type: str | None = None) -> str:
    event: dict[str, object] = {
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-12-03T10:00:00.000Z",
            "messageId": f"msg-{event_type}",
            "source": "shop@shop.example.jp",
            "destination": ["a@example.jp"],
        },
    }
    if event_type == "Bounce":
        event["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "a@example.jp"}],
            "timestamp": "2026-12-03T10:00:01.000Z",
        }
    if event_type == "Complaint":
        event["complaint"] = {
            "complainedRecipients": [{"emailAddress": "a@example.jp"}],
            "timestamp": "2026-12-03T10:00:01.000Z",
        }
    if event_type == "Delivery":
        event["delivery"] = {"timestamp": "2026-12-03T10:00:01.000Z", "recipients": ["a@example.jp"]}
    return json.dumps(event)


class Target:
    """Applies events as Engagement.ses_event would, failing those it is told to."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = failing or set()
        self.seen: list[str] = []

    def ses_event(self, event: SesEvent) -> SesOutcome:
        self.seen.append(event.event_type)
        if event.event_type in self.failing:
            raise ConnectionError("DynamoDB unavailable")
        bounce = event.bounce.bounce_type if event.bounce else None
        permanent = event.event_type == "Complaint" or bounce == "Permanent"
        return SesOutcome(
            event.event_type,
            suppressed=int(permanent),
            stored=permanent,
            counted=event.event_type == "Delivery",
            bounce_type=bounce,
        )


def test_each_event_gives_its_metric_and_the_dashboards_names() -> None:
    report = apply_ses_events(
        [
            _event("Bounce", "Permanent"),
            _event("Bounce", "Transient"),
            _event("Complaint"),
            _event("Delivery"),
        ],
        Target(),
    )
    assert report.metrics() == {
        "EmailBounces": 1,
        "EmailBouncesTransient": 1,
        "EmailComplaints": 1,
        "EmailDeliveryEvents": 1,
        "AddressesSuppressed": 2,
        "DeliveriesCounted": 1,
    }
    report.raise_for_failures()


def test_a_record_that_is_not_an_ses_event_is_dropped_not_retried() -> None:
    report = apply_ses_events(["not json", json.dumps({"hello": 1}), _event("Delivery")], Target())
    assert report.records == 3
    assert len(report.unreadable) == 2
    assert report.metrics()["SesEventsUnreadable"] == 2
    report.raise_for_failures()


def test_a_failed_record_fails_the_invocation_after_the_others_ran() -> None:
    target = Target(failing={"Complaint"})
    report = apply_ses_events([_event("Complaint"), _event("Bounce", "Permanent")], target)
    assert target.seen == ["Complaint", "Bounce"]
    assert report.metrics()["SesEventsFailed"] == 1
    assert report.metrics()["EmailBounces"] == 1
    assert [event_type for event_type, _ in report.failures] == ["Complaint"]
    with pytest.raises(SesEventsFailed, match="1 of 2 SES events failed"):
        report.raise_for_failures()
