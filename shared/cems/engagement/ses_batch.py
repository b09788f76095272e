"""SES events from the configuration set's SNS topic, one invocation's records at a time: which are
dropped, which make Lambda retry the invocation, and what they add to CloudWatch.

Each event is applied once however often SNS delivers it (`Engagement.ses_event` is idempotent). A
record that is not an SES event is dropped (retrying cannot fix it). A record that fails (DynamoDB
down) is counted and the others still run; then the invocation fails (`SesEventsFailed`), so Lambda's
asynchronous retries (and after them the failure queue) take the whole invocation again, and the
records done already change nothing the second time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from cems.engagement.engage import SesOutcome
from cems.engagement.ses_events import SesEvent, parse_ses_event


class SesEventsFailed(RuntimeError):
    """Some records failed: Lambda retries the invocation."""


class SesEventTarget(Protocol):
    def ses_event(self, event: SesEvent) -> SesOutcome: ...


@dataclass
class SesBatchReport:
    """What one invocation's records did (no addresses): for metrics, logs and the retry decision."""

    records: int = 0
    outcomes: list[SesOutcome] = field(default_factory=list)
    # Validation error counts of the records that were not SES events (dropped).
    unreadable: list[int] = field(default_factory=list)
    # The event type and error of each record that failed (retried with the invocation).
    failures: list[tuple[str, Exception]] = field(default_factory=list)

    def metrics(self) -> dict[str, int]:
        """By CloudWatch metric name: EmailBounces (permanent) and EmailComplaints for the dashboard,
        the other outcomes by SES's event type, suppressions, counted deliveries and the failures."""
        counts: Counter[str] = Counter()
        for outcome in self.outcomes:
            counts[outcome_metric(outcome)] += 1
            counts["AddressesSuppressed"] += outcome.suppressed
            counts["DeliveriesCounted"] += int(outcome.counted)
        counts["SesEventsUnreadable"] = len(self.unreadable)
        counts["SesEventsFailed"] = len(self.failures)
        return {name: value for name, value in counts.items() if value}

    def raise_for_failures(self) -> None:
        if self.failures:
            raise SesEventsFailed(
                f"{len(self.failures)} of {self.records} SES events failed; Lambda retries the invocation"
            )


def apply_ses_events(messages: Iterable[str], target: SesEventTarget) -> SesBatchReport:
    """Each SNS record's message, parsed and applied; every record is tried whatever the others do."""
    report = SesBatchReport()
    for message in messages:
        report.records += 1
        try:
            event = parse_ses_event(message)
        except ValidationError as exc:
            report.unreadable.append(exc.error_count())
            continue
        try:
            report.outcomes.append(target.ses_event(event))
        except Exception as exc:  # any failure: retried with the invocation
            report.failures.append((event.event_type, exc))
    return report


def outcome_metric(outcome: SesOutcome) -> str:
    if outcome.event_type == "Bounce":
        return "EmailBounces" if outcome.bounce_type == "Permanent" else f"EmailBounces{outcome.bounce_type}"
    if outcome.event_type == "Complaint":
        return "EmailComplaints"
    return f"Email{outcome.event_type}Events"
