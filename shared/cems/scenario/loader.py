"""Loading scenario files from S3: `scenarios/<id>.json` in, versions and reports out.

For each S3 notification record (`ObjectEvent`):

- **created**: the object is read (the very version the event names), validated in full, and its id
  checked against the file name. Valid: stored as the next version and made active
  (`ScenarioPublisher.put_version`); enrolments already running stay on the version they started on.
  Invalid: nothing is stored and the previous version stays live. Either way a report is written
  back: `reports/<id>.json` (the ValidationReport as JSON, plus what is live) and `reports/<id>.txt`
  (the same in plain words: a Japanese summary line, then each error at its JSON path).
- **removed**: new enrolments stop (`ScenarioPublisher.stop`), and the report says so.

S3 delivers at least once and not always in order. Each event's sequencer is recorded with the
version it made: the same event again makes no second version, and an event older than one already
applied is skipped. Re-uploading the content that is live (same etag) makes no new version either.

**Date-trigger backfill.** A date trigger schedules a customer's moment when an event changes the
date it watches; customers who had the date before the upload would never be scheduled. So when a
version with a date trigger becomes active and the scenario was not active before (new, or stopped)
or its trigger differs from the version that was live, the loader starts a backfill
(`BroadcastStarter.start_backfill`: the broadcast fan-out over CustomersTable, run kind `backfill`,
once per version). The same S3 event seen again (`duplicate`) asks again, comparing with the version
before, which starts nothing when it was started already; unchanged content starts nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import unquote_plus

from cems import clock
from cems.audit import AuditAction, AuditLog, AuditOutcome, withheld_if_personal
from cems.ports import ScenarioFilesPort, ScenarioPublisher
from cems.scenario.model import ID_HINT, ID_HINT_JA, DateTrigger, Scenario
from cems.scenario.problems import bilingual
from cems.scenario.records import ActiveState, ScenarioSource, padded_sequencer
from cems.scenario.validation import Issue, ValidationReport, validate_text

SCENARIOS_PREFIX = "scenarios/"
REPORTS_PREFIX = "reports/"
# A stored version is one DynamoDB item (at most 400 KB) holding the document; real scenarios are
# a few KB, the largest example ~10 KB.
MAX_SCENARIO_BYTES = 300_000
_FILE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
WHOLE_FILE = "(the whole file)"
FILE_NAME = "(the file name)"


@dataclass(frozen=True)
class ObjectEvent:
    """One S3 notification record, as the loader needs it (key already URL-decoded)."""

    kind: Literal["created", "removed"]
    bucket: str
    key: str
    etag: str = ""
    version_id: str | None = None
    sequencer: str | None = None
    # Who changed the file and from where, as S3 reports it: the audit log's actor and address.
    principal: str | None = None
    source_ip: str | None = None
    at: datetime | None = None

    @classmethod
    def from_record(cls, record: Any) -> ObjectEvent:
        """From a Powertools S3EventRecord (or anything with its attributes)."""
        obj = record.s3.get_object
        raw = record.raw_event if hasattr(record, "raw_event") else {}
        event_time = raw.get("eventTime")
        try:
            at = datetime.fromisoformat(event_time.replace("Z", "+00:00")) if event_time else None
        except ValueError:
            at = None
        return cls(
            kind="removed" if record.event_name.startswith("ObjectRemoved") else "created",
            bucket=record.s3.bucket.name,
            key=unquote_plus(obj.key),
            etag=obj.etag.strip('"'),
            version_id=obj.version_id,
            sequencer=obj.get("sequencer"),
            principal=(raw.get("userIdentity") or {}).get("principalId"),
            source_ip=(raw.get("requestParameters") or {}).get("sourceIPAddress"),
            at=at if at is not None and at.tzinfo is not None else None,
        )


Outcome = Literal[
    "activated",  # a new version is active
    "duplicate",  # this event was applied already (its report is written again)
    "unchanged",  # the live version already has this content
    "superseded",  # a later event for the file was applied already: nothing done
    "rejected",  # invalid: reported, nothing stored
    "stopped",  # the file was deleted: no new enrolments
    "ignored",  # not a scenario file (a folder marker), or a delete with nothing to stop
    "gone",  # the object changed or vanished before it was read: a later event covers it
]


# What became of a date-trigger backfill: `started`; `pending` (recorded, its messages not all
# enqueued: tick enqueues them again); `already` (started before); `none` (nothing to backfill).
BackfillResult = Literal["started", "pending", "already", "none"]


class Backfills(Protocol):
    """Starts a date-trigger version's backfill once (cems.scenario.broadcast.BroadcastStarter)."""

    def start_backfill(self, scenario_id: str, version: int) -> BackfillResult: ...


@dataclass(frozen=True)
class LoadResult:
    key: str
    scenario_id: str | None
    outcome: Outcome
    version: int | None = None
    errors: tuple[Issue, ...] = ()
    report_key: str | None = None
    backfill: BackfillResult | None = None  # None: no date trigger, or no backfill asked for


def report_name(key: str) -> str | None:
    """The name a file's report goes under: `scenarios/<name>.json` -> `<name>`; None for a folder."""
    rest = key.removeprefix(SCENARIOS_PREFIX)
    if not rest or rest.endswith("/"):
        return None
    return rest.removesuffix(".json")


class ScenarioLoader:
    def __init__(
        self,
        files: ScenarioFilesPort,
        scenarios: ScenarioPublisher,
        backfills: Backfills | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.files = files
        self.scenarios = scenarios
        self.backfills = backfills
        self.audit = audit

    def handle(self, event: ObjectEvent) -> LoadResult:
        name = report_name(event.key)
        if name is None or not event.key.startswith(SCENARIOS_PREFIX):
            return LoadResult(event.key, None, "ignored")
        result = self._removed(event, name) if event.kind == "removed" else self._created(event, name)
        self._record(event, name, result)
        return result

    def _record(self, event: ObjectEvent, name: str, result: LoadResult) -> None:
        """The upload or delete in the audit log: S3's principal and address, the scenario and what
        became of the file. The id comes from the event's time and sequencer, so S3 delivering the
        same event again (or the loader retrying it) writes no second entry."""
        if self.audit is None:
            return
        detail: dict[str, str | int | bool] = {"outcome": result.outcome}
        if result.version is not None:
            detail["version"] = result.version
        self.audit.record(
            actor=withheld_if_personal(event.principal or "s3"),
            action=AuditAction.SCENARIO_DELETE if event.kind == "removed" else AuditAction.SCENARIO_UPLOAD,
            source_ip=event.source_ip,
            outcome=AuditOutcome.FAILED if result.outcome == "rejected" else AuditOutcome.ALLOWED,
            target=result.scenario_id or name,
            detail=detail,
            at=event.at,
            request_id=None
            if event.at is None
            else f"{event.kind}:{event.key}:{event.sequencer}:{event.etag}",
        )

    # -- removed ----------------------------------------------------------------------------------

    def _removed(self, event: ObjectEvent, name: str) -> LoadResult:
        if not _FILE_ID.match(name) or not self.scenarios.stop(name, event.sequencer):
            return LoadResult(event.key, None, "ignored")
        state = self.scenarios.active(name)
        version = state.version if state else None
        report = {
            "source": _source(event),
            "scenario_id": name,
            "state": "stopped",
            "valid": None,
            "version": version,
            "stopped_at": clock.iso(clock.now()),
            "summary_ja": f"シナリオ {name} を停止しました。新しいエントリーはありません"
            "（進行中の顧客はそのまま続きます）。",
        }
        text = "\n".join(
            [
                f"{_source(event)}: deleted: scenario {name} is stopped (it was at version {version})",
                str(report["summary_ja"]),
                "  New customers no longer enter; those already in it finish on the version they started.",
            ]
        )
        report_key = self.files.write_report(event.bucket, name, report, text)
        return LoadResult(event.key, name, "stopped", version, report_key=report_key)

    # -- created ----------------------------------------------------------------------------------

    def _created(self, event: ObjectEvent, name: str) -> LoadResult:
        current = self.scenarios.active(name) if _FILE_ID.match(name) else None
        if _superseded(current, event):
            return LoadResult(event.key, name, "superseded", current.version if current else None)
        source = _source(event)
        try:
            data = self.files.read(event, MAX_SCENARIO_BYTES)
        except ValueError as exc:
            report = _refused(
                source,
                bilingual(
                    f"ファイルが大きすぎます（{exc}）。"
                    f"シナリオファイルは {MAX_SCENARIO_BYTES:,} バイトまでです",
                    f"the file is too large ({exc}); "
                    f"a scenario file may be at most {MAX_SCENARIO_BYTES:,} bytes",
                ),
            )
            return self._rejected(event, name, report, current)
        if data is None:
            return LoadResult(event.key, name, "gone")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return self._rejected(
                event,
                name,
                _refused(
                    source,
                    bilingual(
                        f"ファイルが UTF-8 のテキストではありません: {exc}",
                        f"the file is not UTF-8 text: {exc}",
                    ),
                ),
                current,
            )
        report = validate_text(text, source)
        _check_name(report, text, event.key, name)
        if not report.valid or report.scenario is None:
            return self._rejected(event, name, report, current)
        document = json.loads(text)
        outcome = self.scenarios.put_version(
            report.scenario,
            document,
            ScenarioSource(event.key, event.etag, event.version_id, event.sequencer),
        )
        if outcome.result == "superseded":
            return LoadResult(event.key, name, "superseded", outcome.version)
        result: Outcome = "unchanged" if outcome.result == "unchanged" else "activated"
        if outcome.result == "duplicate":
            result = "duplicate"
        backfill = self._backfill(report.scenario, outcome.version, result, current)
        report_key = self._accepted(event, name, report, outcome.version, result, backfill)
        return LoadResult(event.key, name, result, outcome.version, report_key=report_key, backfill=backfill)

    def _backfill(
        self, scenario: Scenario, version: int, result: Outcome, before: ActiveState | None
    ) -> BackfillResult | None:
        """Starts the date-trigger backfill a newly active version needs (see the module docstring).
        `before` is the pointer as it was before this event; for a duplicate event it already names
        this version, so the version before it is compared instead."""
        if self.backfills is None or not isinstance(scenario.trigger, DateTrigger):
            return None
        if result == "activated":
            live = before.version if before is not None and before.is_active else None
        elif result == "duplicate":
            live = version - 1 if version > 1 else None
        else:
            return None
        previous = None if live is None else self.scenarios.version(scenario.id, live)
        if previous is not None and previous.scenario.trigger == scenario.trigger:
            return None
        return self.backfills.start_backfill(scenario.id, version)

    def _accepted(
        self,
        event: ObjectEvent,
        name: str,
        report: ValidationReport,
        version: int,
        result: Outcome,
        backfill: BackfillResult | None = None,
    ) -> str:
        assert report.scenario is not None
        body = {
            **report.to_dict(),
            "scenario_id": name,
            "etag": event.etag,
            "state": "active",
            "version": version,
            "result": "unchanged" if result == "unchanged" else "activated",
            "declared_version": report.scenario.version,
            "checked_at": clock.iso(clock.now()),
        }
        if result == "unchanged":
            live_ja = f"内容は変わっていません。バージョン {version} が引き続き有効です。"
            live_en = f"Unchanged: the same content is live as version {version}."
        else:
            live_ja = (
                f"バージョン {version} として有効になりました。進行中の顧客は開始時のバージョンで続きます。"
            )
            live_en = (
                f"Now live as version {version}. New customers enter version {version}; "
                "customers already in the scenario finish on the version they started."
            )
        lines = [report.to_text(), live_ja, f"  {live_en}"]
        if backfill in ("started", "pending", "already"):
            body["backfill"] = backfill
            live_ja += "日付がすでにあるお客様の配信予定を順次登録しています。"
            lines += [
                "日付がすでにあるお客様の配信予定を順次登録しています。",
                "  Customers who already have the date are being scheduled (backfill).",
            ]
        body["summary_ja"] = f"{report.summary_ja()}。{live_ja}"
        text = "\n".join(lines)
        return self.files.write_report(event.bucket, name, body, text)

    def _rejected(
        self, event: ObjectEvent, name: str, report: ValidationReport, current: ActiveState | None
    ) -> LoadResult:
        report.scenario = None
        live = current.version if current is not None and current.is_active else None
        if live is not None:
            live_ja = f"以前のバージョン {live} がそのまま有効です。"
            live_en = f"Nothing was changed: version {live} stays live."
        else:
            live_ja = "このシナリオはまだ有効になっていません。"
            live_en = "Nothing was stored: this scenario has no live version."
        body = {
            **report.to_dict(),
            "scenario_id": name,
            "etag": event.etag,
            "state": "rejected",
            "version": None,
            "live_version": live,
            "checked_at": clock.iso(clock.now()),
        }
        body["summary_ja"] = f"{report.summary_ja()}{live_ja}"
        text = "\n".join([report.to_text(), live_ja, f"  {live_en}"])
        report_key = self.files.write_report(event.bucket, name, body, text)
        return LoadResult(event.key, name, "rejected", None, tuple(report.errors), report_key)


def _source(event: ObjectEvent) -> str:
    return f"s3://{event.bucket}/{event.key}"


def _refused(source: str, message: str) -> ValidationReport:
    return ValidationReport(source, errors=[Issue(WHOLE_FILE, message, "file")])


def _superseded(current: ActiveState | None, event: ObjectEvent) -> bool:
    """A later S3 event for this file was applied already (an older event delivered late)."""
    if current is None or not current.sequencer or not event.sequencer:
        return False
    return current.sequencer > padded_sequencer(event.sequencer)


def _check_name(report: ValidationReport, text: str, key: str, name: str) -> None:
    """A scenario lives at `scenarios/<its id>.json`: a file elsewhere, or whose id differs, is refused."""
    if not key.endswith(".json") or "/" in name or not _FILE_ID.match(name):
        report.errors.insert(
            0,
            Issue(
                FILE_NAME,
                bilingual(
                    f'"{key}" はシナリオのファイル名ではありません。'
                    f"scenarios/<id>.json としてアップロードしてください。<id> はシナリオの id です"
                    f"（{ID_HINT_JA}）",
                    f'"{key}" is not a scenario file name: upload it as scenarios/<id>.json, where <id> is '
                    f"the scenario's id ({ID_HINT})",
                ),
                "file_name",
            ),
        )
        report.scenario = None
        return
    try:
        data = json.loads(text)
    except ValueError:
        return  # reported already
    declared = data.get("id") if isinstance(data, dict) else None
    if isinstance(declared, str) and declared != name:
        report.errors.insert(
            0,
            Issue(
                "id",
                bilingual(
                    f'id は "{declared}" ですが、ファイルは {key} です。シナリオは scenarios/<その id>.json '
                    f'としてアップロードするので、ファイル名を scenarios/{declared}.json にするか、"id" を '
                    f'"{name}" にしてください',
                    f'the id is "{declared}" but the file is {key}: a scenario is uploaded as '
                    f'scenarios/<its id>.json, so rename the file to scenarios/{declared}.json or set "id" '
                    f'to "{name}"',
                ),
                "id_mismatch",
            ),
        )
        report.scenario = None
