"""What operators do with customers, reports and the audit log, checked and recorded in one place.

The console (Cognito roles) and the IAM admin API (the CLI, automation) both call these: each action
names the permission it needs, refuses with 403 when the caller's roles do not grant it, and leaves
exactly one audit entry when it is an audited action, allowed or refused. Entries carry ids and the
kind of lookup, never the value looked up. An IAM caller is an `Operator` with the admin role: its
IAM policy, not CEMS, decides what it may call (template.yaml's four operator policies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cems.audit import AuditAction, AuditLog, AuditOutcome, AuditPage, withheld_if_personal
from cems.console.access import Operator, Permission, Role
from cems.console.customers import CustomerDirectory, LookupKind, UnusableLookupValue
from cems.errors import ClientError
from cems.jsonbody import load_object
from cems.models import Channel
from cems.ports import MessageQueue, ServiceUnavailable
from cems.reports.report import ScenarioReport, UnknownScenario, step_counts
from cems.scenario.model import Scenario, SendStep
from cems.scenario.problems import bilingual
from cems.scenario.records import ActiveState, ScenarioVersion

if TYPE_CHECKING:
    from cems.models import Profile, StoredEvent
    from cems.scenario.test_send import Recipient

# The query parameters a customer is found by (exactly one), and what each is.
FIND_BY: Mapping[str, LookupKind] = {
    "email": LookupKind.EMAIL,
    "phone": LookupKind.PHONE,
    "line_user_id": LookupKind.LINE,
    "user_id": LookupKind.USER,
    "anonymous_id": LookupKind.ANONYMOUS,
}
MAX_VERSION_DIGITS = 9
AUDIT_DAYS_DEFAULT = 7
# A preview's or test send's request: the step, the recipient, and a profile and event to render with
# (as the CLI's --profile-file and --event-file); a profile's traits may nest a little.
MAX_TEST_SEND_BYTES = 64 * 1024
MAX_TEST_SEND_DEPTH = 8
NEVER_COUNTED = "テスト送信はレポートに数えられません / a test send is never counted in reports"

CUSTOMER_NOT_FOUND = ClientError(
    404, "customer_not_found", "顧客が見つかりません / no such customer (never was, or erased)", field="id"
)


class ErasedCustomer(Protocol):
    """What an erasure reports: the ids of the person it erased and how many items of each kind."""

    @property
    def customer_ids(self) -> tuple[str, ...]: ...

    def counts(self) -> dict[str, int]: ...


class CustomerErasure(Protocol):
    def erase(self, customer_id: str) -> ErasedCustomer | None: ...


class ScenarioVersions(Protocol):
    """Stored scenario versions (cems.adapters.dynamodb.journeys.ScenarioStore)."""

    def active(self, scenario_id: str) -> ActiveState | None: ...

    def version(self, scenario_id: str, version: int) -> ScenarioVersion | None: ...

    def versions(self, scenario_id: str) -> list[int]: ...


class AudienceCounts(Protocol):
    """The audience count (cems.console.audience_runs.AudienceRuns): at once, or a run fanned out."""

    def count(self, scenario: Scenario, document: str, *, started_by: str, time_budget_s: float) -> Any: ...

    def status(self, run_id: str) -> Any: ...


class InvalidScenarioDocument(ClientError):
    """A scenario document that does not validate: 400 with every problem at its JSON path."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(
            400,
            "invalid_scenario",
            bilingual("シナリオに問題があります", "the scenario is not valid"),
            field="body",
        )
        self.problems = problems

    def body(self) -> dict[str, Any]:
        return {**super().body(), "problems": self.problems}


class UploadReports(Protocol):
    """The loader's reports on uploaded files (cems.adapters.s3.ScenarioFiles)."""

    def read_report(self, bucket: str, name: str, max_bytes: int = ...) -> dict[str, Any] | None: ...


class Reports(Protocol):
    """The scenario reports (cems.reports.report.ReportService)."""

    def list(self) -> list[Any]: ...

    def report(self, scenario_id: str, version: int | None = None) -> Any: ...


@dataclass(frozen=True)
class Caller:
    """Who asks, and from where: an operator (console) or an IAM principal (admin API)."""

    operator: Operator
    source_ip: str | None
    request_id: str | None = None

    @classmethod
    def iam(cls, principal: str | None, source_ip: str | None, request_id: str | None = None) -> Caller:
        return cls(Operator(principal or "iam", frozenset({Role.ADMIN})), source_ip, request_id)

    @property
    def role(self) -> Role | None:
        for role in Role:  # declared from most to least privileged
            if role in self.operator.roles:
                return role
        return None


class OperatorActions:
    def __init__(
        self,
        directory: CustomerDirectory,
        eraser: CustomerErasure,
        reports: Reports,
        scenario_versions: ScenarioVersions,
        audit: AuditLog,
        audience: Callable[[], AudienceCounts] | None = None,
        upload_reports: tuple[UploadReports, str] | None = None,
        now: Callable[[], datetime] | None = None,
        send_queues: Callable[[], Mapping[Channel, MessageQueue]] | None = None,
    ) -> None:
        self.directory = directory
        self.eraser = eraser
        self.reports = reports
        self.scenario_versions = scenario_versions
        self.audit = audit
        # Built on the first count: the count loads the scenario engine and the broadcast's entry
        # decision, which no other console or admin request needs (a cold start without them).
        self._audience_factory = audience
        self._audience: AudienceCounts | None = None
        self.upload_reports = upload_reports  # (reader, bucket)
        self.now = now or audit.now
        # Each channel's send queue, for test sends; built on the first one (an SQS client is most of
        # what building costs, and no other request needs it).
        self._send_queues_factory = send_queues
        self._send_queues: Mapping[Channel, MessageQueue] | None = None

    # -- checks ------------------------------------------------------------------------------------

    def _allowed(
        self,
        caller: Caller,
        permission: Permission,
        action: AuditAction | None,
        target: str | None = None,
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        """403 when the caller may not; an audited action's refusal is its one entry."""
        if caller.operator.may(permission):
            return
        if action is not None:
            self._record(caller, action, target, detail, AuditOutcome.REFUSED)
        caller.operator.require(permission)

    def _record(
        self,
        caller: Caller,
        action: AuditAction,
        target: str | None = None,
        detail: Mapping[str, str | int | bool] | None = None,
        outcome: AuditOutcome = AuditOutcome.ALLOWED,
    ) -> None:
        self.audit.record(
            actor=caller.operator.name,
            role=caller.role,
            action=action,
            source_ip=caller.source_ip,
            outcome=outcome,
            target=target,
            detail=detail,
            request_id=caller.request_id,
        )

    # -- customers ---------------------------------------------------------------------------------

    def find_customers(self, caller: Caller, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Masked customers found by exactly one of FIND_BY; the entry says by what, never the value."""
        given = [name for name in FIND_BY if name in query]
        if not given:
            raise ClientError(
                400,
                "lookup_required",
                f"give one of {', '.join(FIND_BY)} to find a customer by",
                field="query",
            )
        if len(given) > 1:
            raise ClientError(
                400,
                "one_lookup_only",
                f"give only one of {', '.join(given)}, not {len(given)}",
                field=given[1],
            )
        name = given[0]
        detail = {"by": name}
        self._allowed(caller, Permission.CUSTOMERS_VIEW, AuditAction.CUSTOMER_VIEW, detail=detail)
        try:
            found = self.directory.find(FIND_BY[name], query[name])
        except UnusableLookupValue:
            raise ClientError(
                400, f"invalid_{name}", f"{name} is not a value a customer can be found by", field=name
            ) from None
        self._record(caller, AuditAction.CUSTOMER_VIEW, detail={**detail, "found": len(found)})
        return [f.masked() for f in found]

    def view_customer(self, caller: Caller, customer_id: str, unmasked: str | None = None) -> dict[str, Any]:
        """The customer, masked; `unmasked=true` needs the unmask permission and is its own entry."""
        if unmasked not in (None, "true", "false"):
            raise ClientError(400, "invalid_unmasked", "unmasked must be true or false", field="unmasked")
        show = unmasked == "true"
        action = AuditAction.CUSTOMER_UNMASK if show else AuditAction.CUSTOMER_VIEW
        self._allowed(caller, Permission.CUSTOMERS_VIEW, action, customer_id)
        if show:
            self._allowed(caller, Permission.CUSTOMERS_UNMASK, action, customer_id)
        view = self.directory.view(customer_id, unmasked=show)
        if view is None:
            self._record(caller, action, customer_id, outcome=AuditOutcome.FAILED)
            raise CUSTOMER_NOT_FOUND
        self._record(caller, action, customer_id)
        return view

    def export_customer(self, caller: Caller, customer_id: str) -> dict[str, Any]:
        """Everything held about the person (an APPI disclosure request)."""
        self._allowed(caller, Permission.CUSTOMERS_EXPORT, AuditAction.CUSTOMER_EXPORT, customer_id)
        document = self.directory.export(customer_id)
        if document is None:
            self._record(caller, AuditAction.CUSTOMER_EXPORT, customer_id, outcome=AuditOutcome.FAILED)
            raise CUSTOMER_NOT_FOUND
        self._record(caller, AuditAction.CUSTOMER_EXPORT, customer_id, {"ids": len(document["customer_ids"])})
        return document

    def erase_customer(self, caller: Caller, customer_id: str) -> ErasedCustomer:
        self._allowed(caller, Permission.CUSTOMERS_ERASE, AuditAction.CUSTOMER_ERASE, customer_id)
        erasure = self.eraser.erase(customer_id)
        if erasure is None:
            self._record(caller, AuditAction.CUSTOMER_ERASE, customer_id, outcome=AuditOutcome.FAILED)
            raise CUSTOMER_NOT_FOUND
        self._record(caller, AuditAction.CUSTOMER_ERASE, customer_id, {"ids": len(erasure.customer_ids)})
        return erasure

    # -- scenarios and reports -----------------------------------------------------------------------

    def scenarios(self, caller: Caller) -> list[Any]:
        caller.operator.require(Permission.SCENARIOS_VIEW)
        return self.reports.list()

    def report(self, caller: Caller, scenario_id: str, version: str | None = None) -> Any:
        """A scenario's report (one version with `version`); a view of results is an audit entry."""
        number = parse_version(version)
        self._allowed(caller, Permission.REPORTS_VIEW, AuditAction.REPORT_VIEW, scenario_id)
        detail = None if number is None else {"version": number}
        try:
            found = self.reports.report(scenario_id, number)
        except UnknownScenario as exc:
            self._record(caller, AuditAction.REPORT_VIEW, scenario_id, detail, AuditOutcome.FAILED)
            raise ClientError(404, "scenario_not_found", str(exc), field="id") from None
        self._record(caller, AuditAction.REPORT_VIEW, scenario_id, detail)
        return found

    def diagram(
        self, caller: Caller, scenario_id: str, version: str | None = None, *, counts: bool = True
    ) -> str:
        """The scenario drawn as SVG (the active version, or `version`). Over each step the counts of
        that version (entered, waiting there now, sent, suppressed, converted) for a caller who may
        see results, which is a report view (one audit entry); `counts` False: the drawing alone, no
        entry (the console's page asks for this: the report it asks for next records the look and
        brings the diagram with counts)."""
        stored = self._stored(caller, scenario_id, version)
        if not (counts and caller.operator.may(Permission.REPORTS_VIEW)):
            return _drawn(stored.scenario, None)
        report = self.reports.report(scenario_id, stored.version)
        detail: dict[str, str | int | bool] = {"version": stored.version, "view": "diagram"}
        self._record(caller, AuditAction.REPORT_VIEW, scenario_id, detail)
        return _drawn(stored.scenario, step_counts(report))

    def compare(
        self, caller: Caller, scenario_id: str, left: str | None, right: str | None
    ) -> dict[str, str]:
        """Two versions' diagrams side by side, each with its own counts for a caller who may see
        results: one look, so one audit entry naming both versions."""
        sides = {
            "left": self._stored(caller, scenario_id, left),
            "right": self._stored(caller, scenario_id, right),
        }
        if not caller.operator.may(Permission.REPORTS_VIEW):
            return {side: _drawn(stored.scenario, None) for side, stored in sides.items()}
        drawn = {
            side: _drawn(stored.scenario, step_counts(self.reports.report(scenario_id, stored.version)))
            for side, stored in sides.items()
        }
        # Audit details are scalars: the two versions as two fields.
        detail: dict[str, str | int | bool] = {
            "version": sides["left"].version,
            "compared_with": sides["right"].version,
            "view": "compare",
        }
        self._record(caller, AuditAction.REPORT_VIEW, scenario_id, detail)
        return drawn

    def report_diagram(self, caller: Caller, report: ScenarioReport) -> str | None:
        """The diagram that goes with a report the caller was given (`report`): the reported version,
        or the active one for a report of every version, with the report's own counts per step (None:
        no such version stored). No entry of its own: the report recorded the look."""
        version = None if report.version is None else str(report.version)
        try:
            stored = self._stored(caller, report.scenario_id, version)
        except ClientError:
            return None
        return _drawn(stored.scenario, step_counts(report))

    def _stored(self, caller: Caller, scenario_id: str, version: str | None) -> ScenarioVersion:
        caller.operator.require(Permission.SCENARIOS_VIEW)
        number = parse_version(version)
        if number is None:
            state = self.scenario_versions.active(scenario_id)
            number = None if state is None else state.version
        stored = None if number is None else self.scenario_versions.version(scenario_id, number)
        if stored is None:
            raise ClientError(
                404, "scenario_not_found", "シナリオが見つかりません / no such scenario", field="id"
            )
        return stored

    def versions(self, caller: Caller, scenario_id: str) -> dict[str, Any]:
        """The scenario's stored versions, oldest first, each with when it was uploaded, its name and
        priority, and which one is active: what two diagrams side by side are chosen from."""
        caller.operator.require(Permission.SCENARIOS_VIEW)
        state = self.scenario_versions.active(scenario_id)
        listed = []
        for number in self.scenario_versions.versions(scenario_id):
            stored = self.scenario_versions.version(scenario_id, number)
            if stored is None:  # listed a moment ago: cannot vanish, versions are kept
                continue
            listed.append(
                {
                    "version": number,
                    "uploaded_at": stored.uploaded_at.isoformat(),
                    "name": stored.scenario.name,
                    "priority": stored.scenario.priority,
                    "steps": len(stored.scenario.steps),
                    # What a preview or test send is chosen from (the page lists them by version).
                    "send_steps": [
                        {"id": step.id, "name": step.name, "channel": step.channel}
                        for step in stored.scenario.steps
                        if isinstance(step, SendStep)
                    ],
                }
            )
        if not listed:
            message = "シナリオが見つかりません / no such scenario"
            raise ClientError(404, "scenario_not_found", message, field="id")
        return {
            "scenario_id": scenario_id,
            "state": None if state is None else state.state,
            "active_version": None if state is None else state.version,
            "versions": listed,
        }

    # -- previews and test sends ------------------------------------------------------------------------

    def preview(self, caller: Caller, scenario_id: str, body: bytes) -> dict[str, Any]:
        """A send step of a stored version (the active one, or `version`) rendered on each channel it
        may send on, with the sample profile or the request's `profile` (and `event` as the trigger),
        exactly as a test send renders it; nothing is queued. Not an audit entry: nothing leaves
        CEMS and no customer's data is read (the profile is the sample or the operator's own
        fields), like a diagram without counts."""
        from cems.scenario import test_send

        caller.operator.require(Permission.TEST_SEND)
        request = _test_send_request(body)
        stored = self._stored(caller, scenario_id, _version_field(request))
        scenario = _as_stored(stored)
        step = _send_step(scenario, request.get("step"))
        profile, event = _profile_and_event(request)
        try:
            rendered = test_send.render_preview(scenario, step.id, profile, event)
        except ValueError as exc:
            raise _cannot_render(exc) from None
        return {
            "scenario_id": scenario_id,
            "version": stored.version,
            "step": {"id": step.id, "name": step.name, "channel": step.channel},
            "profile": "sample" if profile is None else "given",
            "channels": [
                {"channel": r.channel.value, "preview": r.preview, "content": r.content()} for r in rendered
            ],
        }

    def test_send(self, caller: Caller, scenario_id: str, body: bytes) -> dict[str, Any]:
        """One send step of a stored version rendered (as `preview`) and queued on its channel's send
        queue as a test dispatch for the request's `to` only (`line:U...` or `email:...`), as
        `cems scenario test-send` does: marked as a test, never counted in reports.

        Exactly one audit entry per attempt, allowed, refused or failed (bad input, no such scenario):
        it names the scenario, the step and the channel, never the recipient. The allowed entry is
        written before the dispatch is queued, so a test send that cannot be recorded is not sent
        (as the CLI does); a queue that then refuses it answers 503, and that entry stands for the
        attempt (the log is append-only)."""
        from cems.channels.registry import plugin
        from cems.scenario import test_send

        step_id = _step_field(body)
        detail: dict[str, str | int | bool] = {} if step_id is None else {"step": step_id}
        self._allowed(caller, Permission.TEST_SEND, AuditAction.TEST_SEND, scenario_id, detail)
        try:
            request = _test_send_request(body)
            stored = self._stored(caller, scenario_id, _version_field(request))
            detail["version"] = stored.version
            scenario = _as_stored(stored)
            step = _send_step(scenario, request.get("step"))
            recipient = _recipient(request.get("to"))
            detail["channel"] = recipient.channel.value
            if recipient.channel not in step.channels():
                offered = " / ".join(plugin(c).test_address_help for c in step.channels())
                message = (
                    f"ステップ {step.id} はこのチャネルで送りません / step {step.id} sends on {offered} only"
                )
                raise ClientError(400, "wrong_channel", message, field="to")
            profile, event = _profile_and_event(request)
            try:
                send = test_send.build_test_send(scenario, step.id, recipient, profile, event)
            except ValueError as exc:
                raise _cannot_render(exc) from None
            queue = self._queue_for(send.channel)
        except ClientError:
            self._record(caller, AuditAction.TEST_SEND, scenario_id, detail, AuditOutcome.FAILED)
            raise
        self._record(caller, AuditAction.TEST_SEND, scenario_id, detail)
        try:
            queue.send([send.body()])
        except (ServiceUnavailable, ValueError):
            message = "テスト送信を登録できませんでした / the test send could not be queued; try again"
            raise ClientError(503, "not_queued", message, field="queue") from None
        return {
            "queued": True,
            "scenario_id": scenario_id,
            "version": stored.version,
            "step": send.step_id,
            "channel": send.channel.value,
            "queue": plugin(send.channel).queue_resource,
            "key": send.key,
            "preview": send.preview,
            # Where a test is looked at on the page it shows on (web): the one-off preview link.
            "link": plugin(send.channel).test_link(send.dispatch),
            "note": NEVER_COUNTED,
        }

    def _queue_for(self, channel: Channel) -> MessageQueue:
        if self._send_queues is None and self._send_queues_factory is not None:
            self._send_queues = self._send_queues_factory()
        queue = None if self._send_queues is None else self._send_queues.get(channel)
        if queue is None:
            message = "テスト送信はここでは使えません / test sends are not configured here"
            raise ClientError(503, "not_available", message, field="queue")
        return queue

    def upload_report(self, caller: Caller, scenario_id: str) -> dict[str, Any]:
        """The loader's report on the scenario's last uploaded file: valid or not, with every error
        at its JSON path (what the marketer fixes)."""
        caller.operator.require(Permission.SCENARIOS_VIEW)
        found = None
        if self.upload_reports is not None:
            reader, bucket = self.upload_reports
            found = reader.read_report(bucket, scenario_id)
        if found is None:
            message = "アップロードの結果がありません / no upload report for this scenario"
            raise ClientError(404, "upload_report_not_found", message, field="id")
        return found

    def count_audience(self, caller: Caller, document: str, time_budget_s: float) -> Any:
        """The audience of a scenario document before it is sent: matching customers, reach per
        channel, holdout and a masked sample (docs/audience.md); an audit entry with the counts. A
        large table's count is a run fanned out over segments: the answer then names its `run`, not
        yet complete, and the entry the run (its counts are not known yet)."""
        from cems.scenario.loader import MAX_SCENARIO_BYTES
        from cems.scenario.validation import validate_text

        self._allowed(caller, Permission.AUDIENCE_COUNT, AuditAction.AUDIENCE_COUNT)
        try:
            audience = self._audience_counts()
            # The loader's limit for a scenario file: a count is of a document that could be uploaded
            # (and a run stores it in one DynamoDB item, which holds 400 KB).
            if len(document.encode("utf-8")) > MAX_SCENARIO_BYTES:
                limit = f"{MAX_SCENARIO_BYTES:,}"
                message = f"シナリオは {limit} バイトまでです / a scenario may be at most {limit} bytes"
                raise ClientError(413, "too_large", message, field="body", limit=MAX_SCENARIO_BYTES)
        except ClientError:
            self._record(caller, AuditAction.AUDIENCE_COUNT, outcome=AuditOutcome.FAILED)
            raise
        report = validate_text(document, "request body")
        if report.scenario is None:
            self._record(caller, AuditAction.AUDIENCE_COUNT, outcome=AuditOutcome.FAILED)
            raise InvalidScenarioDocument([e.to_dict() for e in report.errors])
        scenario_id = report.scenario.id
        try:
            count = audience.count(
                report.scenario, document, started_by=caller.operator.name, time_budget_s=time_budget_s
            )
        except ServiceUnavailable:
            self._record(caller, AuditAction.AUDIENCE_COUNT, scenario_id, outcome=AuditOutcome.FAILED)
            message = "集計を開始できませんでした / the count could not be started; try again"
            raise ClientError(503, "not_queued", message, field="queue") from None
        detail: dict[str, str | int | bool] = {"matching": count.matching, "complete": count.complete}
        if count.run is not None:
            detail = {"run": count.run, "segments": count.segments, "complete": False}
        self._record(caller, AuditAction.AUDIENCE_COUNT, scenario_id, detail)
        return count

    def audience_run(self, caller: Caller, run_id: str) -> Any:
        """A fanned-out count's counts so far (404 for no such run, or one expired after a day).

        Needs the permission the count needs, and writes no audit entry: the count was recorded once,
        when started, and asking how far it got reads nothing more than that count (a page asks every
        few seconds, which would bury the log in entries saying the same). Any operator who may count
        may read any run: its answer is what they would get by counting the same document, and a run
        id is 128 random bits, known only to whoever started it or was given it."""
        caller.operator.require(Permission.AUDIENCE_COUNT)
        found = self._audience_counts().status(run_id)
        if found is None:
            message = "集計が見つかりません（1 日で消えます） / no such count (a count is kept a day)"
            raise ClientError(404, "audience_run_not_found", message, field="run")
        return found

    def _audience_counts(self) -> AudienceCounts:
        if self._audience is None and self._audience_factory is not None:
            self._audience = self._audience_factory()
        if self._audience is None:
            raise ClientError(
                404, "not_available", "audience counts are not configured here", field="audience"
            )
        return self._audience

    # -- the audit log -------------------------------------------------------------------------------

    def audit_entries(self, caller: Caller, query: Mapping[str, str]) -> AuditPage:
        """A page of the audit log, newest first: `days` back from now (1-90, default 7), `cursor`."""
        caller.operator.require(Permission.AUDIT_VIEW)
        raw = query.get("days", str(AUDIT_DAYS_DEFAULT))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 2) or not 1 <= int(raw) <= 90:
            raise ClientError(400, "invalid_days", "days must be a whole number from 1 to 90", field="days")
        since = self.now() - timedelta(days=int(raw))
        try:
            return self.audit.entries(since, limit=100, cursor=query.get("cursor"))
        except ValueError:
            raise ClientError(
                400, "invalid_cursor", "the cursor is not one this log gave", field="cursor"
            ) from None


def _test_send_request(body: bytes) -> dict[str, Any]:
    """A preview's or test send's JSON object (400 naming the field for anything malformed)."""
    if len(body) > MAX_TEST_SEND_BYTES:
        raise ClientError(413, "too_large", "the body is too large", field="body", limit=MAX_TEST_SEND_BYTES)
    return load_object(body or b"{}", max_depth=MAX_TEST_SEND_DEPTH)


def _step_field(body: bytes) -> str | None:
    """The step a request names, for its audit entry, read before anything is checked (the entry of
    a refused or malformed attempt names it too, when there is one to name)."""
    try:
        step = _test_send_request(body).get("step")
    except ClientError:
        return None
    # Whatever was typed, before it is known to be a step id: never personal data in an entry.
    return withheld_if_personal(step[:128]) if isinstance(step, str) and step else None


def _version_field(request: Mapping[str, Any]) -> str | None:
    version = request.get("version")
    if version is None or isinstance(version, str):
        return version
    if isinstance(version, int) and not isinstance(version, bool):
        return str(version)
    raise ClientError(400, "invalid_version", "version must be a positive whole number", field="version")


def _as_stored(stored: ScenarioVersion) -> Scenario:
    """The stored scenario with its stored version number, which is what the engine renders
    `scenario.version` as (the file's own `version` field may say otherwise)."""
    return stored.scenario.model_copy(update={"version": stored.version})


def _send_step(scenario: Scenario, step_id: Any) -> SendStep:
    from cems.scenario import test_send

    if not isinstance(step_id, str) or not step_id:
        sends = ", ".join(s.id for s in scenario.steps if isinstance(s, SendStep)) or "none"
        message = f"送信ステップを指定してください / give the send step's id (send steps: {sends})"
        raise ClientError(400, "step_required", message, field="step")
    try:
        return test_send.send_step(scenario, step_id)
    except ValueError as exc:
        raise ClientError(400, "not_a_send_step", str(exc), field="step") from None


def _cannot_render(exc: ValueError) -> ClientError:
    """A step the profile (or the missing trigger event) cannot fill: 400 on `step`, in the words of
    the API rather than the CLI's options."""
    message = str(exc).replace("--event-file", '"event"')
    return ClientError(400, "cannot_render", message, field="step")


def _recipient(spec: Any) -> Recipient:
    """The `to` of a test send; the refusal names the form, never the value given."""
    from cems.scenario import test_send

    if not isinstance(spec, str):
        raise ClientError(400, "to_required", "宛先を指定してください / " + _to_help(), field="to")
    try:
        return test_send.parse_recipient(spec)
    except ValueError as exc:
        raise ClientError(400, "invalid_to", f"宛先が正しくありません / {exc}", field="to") from None


def _to_help() -> str:
    from cems.scenario.test_send import RECIPIENT_HELP

    return RECIPIENT_HELP.replace("--to takes", "to takes")


def _profile_and_event(request: Mapping[str, Any]) -> tuple[Profile | None, StoredEvent | None]:
    """The request's `profile` (profile fields laid over the sample, as --profile-file) and `event`
    (the trigger event, as --event-file), each None when not given. A stored customer's profile
    cannot be named here: a content writer may see no customer data."""
    from cems.scenario import test_send

    profile = None
    if request.get("profile") is not None:
        try:
            profile = test_send.profile_from_json(request["profile"])
        except ValueError as exc:
            raise ClientError(400, "invalid_profile", str(exc), field="profile") from None
    event = None
    if request.get("event") is not None:
        customer_id = profile.customer_id if profile is not None else test_send.TEST_CUSTOMER
        try:
            event = test_send.event_from_json(request["event"], customer_id)
        except ValueError as exc:
            raise ClientError(400, "invalid_event", str(exc), field="event") from None
    return profile, event


def _drawn(scenario: Scenario, counts: dict[str, dict[str, int]] | None) -> str:
    # Imported on first use: the layout is needed only when a diagram is asked for (cold start).
    from cems.console.diagram import layout, render_svg

    return render_svg(layout(scenario), counts)


def parse_version(raw: str | None) -> int | None:
    """A report's `version` parameter: ASCII digits only, and few (str.isdigit accepts "²", and int()
    refuses 4,300 digits or more)."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_VERSION_DIGITS or int(raw) < 1:
        raise ClientError(400, "invalid_version", "version must be a positive whole number", field="version")
    return int(raw)
