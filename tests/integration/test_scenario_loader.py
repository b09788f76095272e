"""scenario_loader under moto: functions/scenario_loader/app.py is imported afresh and fed S3 records
(the samples in events/scenario_loader/, pointed at objects really in the versioned bucket)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cems.adapters import aws
from cems.adapters.dynamodb.journeys import JourneyStores
from cems.scenario.loader import MAX_SCENARIO_BYTES
from cems.settings import Settings
from cems.wiring import journey_stores

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
APP = ROOT / "functions" / "scenario_loader" / "app.py"
EVENTS = ROOT / "events" / "scenario_loader"
EXAMPLE = ROOT / "examples" / "scenarios" / "line_welcome.json"
BUCKET = "cems-dev-scenarios-123456789012-ap-northeast-1"
KEY = "scenarios/line-welcome.json"


FakeLambdaContext = partial(FakeContext, "cems-dev-ScenarioLoaderFunction")


class Harness:
    def __init__(self, module: ModuleType, s3: Any, stores: JourneyStores) -> None:
        self.module = module
        self.s3 = s3
        self.stores = stores
        self._sequence = 0x62F1A3B4C5D6E7F8

    def upload(self, body: bytes | str | dict[str, Any], key: str = KEY) -> dict[str, Any]:
        """Puts the object and returns the ObjectCreated event S3 would send for it."""
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else _dumps(body)).encode()
        answer = self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        event = _sample("put.json")
        obj = event["Records"][0]["s3"]["object"]
        obj.update(
            key=key.replace(" ", "+"),
            eTag=answer["ETag"].strip('"'),
            versionId=answer["VersionId"],
            size=len(data),
            sequencer=self._next_sequencer(),
        )
        return event

    def delete(self, key: str = KEY) -> dict[str, Any]:
        answer = self.s3.delete_object(Bucket=BUCKET, Key=key)
        event = _sample("delete.json")
        obj = event["Records"][0]["s3"]["object"]
        obj.update(key=key, versionId=answer.get("VersionId"), sequencer=self._next_sequencer())
        return event

    def _next_sequencer(self) -> str:
        self._sequence += 0x10
        return f"{self._sequence:018X}"

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.module.lambda_handler(event, FakeLambdaContext())
        return result

    def outcome(self, event: dict[str, Any]) -> str:
        return str(self.invoke(event)["results"][0]["outcome"])

    def report(self, name: str = "line-welcome") -> dict[str, Any]:
        body = self.s3.get_object(Bucket=BUCKET, Key=f"reports/{name}.json")["Body"].read()
        report: dict[str, Any] = json.loads(body)
        return report

    def report_text(self, name: str = "line-welcome") -> str:
        text: str = self.s3.get_object(Bucket=BUCKET, Key=f"reports/{name}.txt")["Body"].read().decode()
        return text

    def active_version(self, scenario_id: str = "line-welcome") -> int | None:
        state = self.stores.scenarios.active(scenario_id)
        return state.version if state is not None and state.is_active else None


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2)


def _sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def _example(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    document.update(changes)
    return document


@pytest.fixture
def harness(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    s3 = boto3.client("s3", region_name="ap-northeast-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "JOURNEYS_TABLE": "JourneysTable",
        "SCENARIO_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    name = "cems_scenario_loader_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield Harness(module, s3, journey_stores(dynamodb, Settings({"JOURNEYS_TABLE": "JourneysTable"})))
    sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()


def test_a_valid_file_becomes_version_1_and_active(harness: Harness) -> None:
    assert harness.outcome(harness.upload(EXAMPLE.read_bytes())) == "activated"
    assert harness.active_version() == 1
    report = harness.report()
    assert report["valid"] is True and report["state"] == "active" and report["version"] == 1
    assert report["errors"] == [] and report["scenario_id"] == "line-welcome"
    assert "バージョン 1 として有効になりました" in report["summary_ja"]
    assert "Now live as version 1" in harness.report_text()
    stored = harness.stores.scenarios.version("line-welcome", 1)
    assert stored is not None and stored.source is not None and stored.source.key == KEY
    assert [s.scenario_id for s in harness.stores.scenarios.active_summaries()] == ["line-welcome"]


def test_a_second_valid_file_becomes_version_2_and_version_1_is_kept(harness: Harness) -> None:
    harness.invoke(harness.upload(EXAMPLE.read_bytes()))
    changed = _example(name="LINE welcome (spring)", version=2)
    assert harness.outcome(harness.upload(changed)) == "activated"
    assert harness.active_version() == 2
    assert harness.report()["version"] == 2 and harness.report()["declared_version"] == 2
    v1 = harness.stores.scenarios.version("line-welcome", 1)
    assert v1 is not None and v1.scenario.name != "LINE welcome (spring)"
    assert harness.stores.scenarios.versions("line-welcome") == [1, 2]


def _broken(**changes: Any) -> Callable[[], str]:
    return lambda: _dumps(_example(**changes))


def _with_step(index: int, **changes: Any) -> Callable[[], str]:
    def build() -> str:
        document = _example()
        document["steps"][index].update(changes)
        return _dumps(document)

    return build


def _without_step_field(index: int, field: str) -> Callable[[], str]:
    def build() -> str:
        document = _example()
        del document["steps"][index][field]
        return _dumps(document)

    return build


# (what is wrong, the file's text, a path the report must name, a word its message must contain)
MISTAKES: list[tuple[str, Callable[[], str], str, str]] = [
    ("not JSON", lambda: EXAMPLE.read_text(encoding="utf-8")[:200], "(the whole file)", "not valid JSON"),
    ("a list, not an object", lambda: "[1, 2]", "(the whole file)", "JSON object"),
    ("a misspelt field", lambda: _dumps({**_example(), "priorty": 5}), "priorty", "priority"),
    ("a text where a number goes", _broken(priority="high"), "priority", "whole number"),
    ("an unknown trigger type", _broken(trigger={"type": "line_folow"}), "trigger.type", "line_follow"),
    ("an unknown step type", _with_step(0, type="sned"), "steps[0].type", "send"),
    ("a bad duration", _with_step(2, duration="3 days"), "steps[2].duration", "duration"),
    ("a step that does not exist", _with_step(0, next="no-such-step"), "steps[0].next", "no-such-step"),
    ("a required field missing", _without_step_field(0, "channel"), "steps[0].channel", "required"),
    ("holdout over 50 %", _broken(entry={"holdout_percent": 80}), "entry.holdout_percent", "50"),
    ("a bad id", _broken(id="Line Welcome"), "id", "not a valid id"),
    ("the id does not match the file name", _broken(id="line-hello"), "id", "line-hello.json"),
    (
        "a key given twice",
        lambda: EXAMPLE.read_text(encoding="utf-8").replace(
            '"priority": 100,', '"priority": 100, "priority": 1,'
        ),
        "(the whole file)",
        "appears twice",
    ),
    (
        "a Liquid template that does not parse",
        lambda: EXAMPLE.read_text(encoding="utf-8").replace(
            "ありがとうございます", "{{ profile.traits.name "
        ),
        "steps[0].line[0].text",
        "",
    ),
    ("not UTF-8", lambda: "", "(the whole file)", "UTF-8"),
    ("too large", lambda: "", "(the whole file)", "too large"),
]


@pytest.mark.parametrize(("mistake", "build", "path", "word"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_an_invalid_file_is_reported_and_the_previous_version_stays_live(
    harness: Harness, mistake: str, build: Callable[[], str], path: str, word: str
) -> None:
    harness.invoke(harness.upload(EXAMPLE.read_bytes()))
    if mistake == "not UTF-8":
        body: bytes | str = EXAMPLE.read_text(encoding="utf-8").encode("shift_jis", errors="replace")
    elif mistake == "too large":
        body = _dumps(_example(description="x" * MAX_SCENARIO_BYTES))
    else:
        body = build()
    assert harness.outcome(harness.upload(body)) == "rejected"
    report = harness.report()
    assert report["valid"] is False and report["state"] == "rejected" and report["version"] is None
    assert report["live_version"] == 1
    matching = [e for e in report["errors"] if e["path"] == path]
    assert matching, f"{mistake}: no error at {path}: {report['errors']}"
    assert any(word in e["message"] for e in matching), matching
    # Every message is Japanese first, English alongside.
    for error in report["errors"]:
        japanese, _, english = error["message"].partition(" / ")
        assert english and any("\u3040" <= c <= "\u9fff" for c in japanese), error
    text = harness.report_text()
    assert text.splitlines()[1].startswith("無効なシナリオです")
    assert f"error: {path}" in text and "version 1 stays live" in text
    assert "以前のバージョン 1 がそのまま有効です" in report["summary_ja"]
    # Nothing was stored: version 1 is still the one new customers enter.
    assert harness.active_version() == 1
    assert harness.stores.scenarios.versions("line-welcome") == [1]


def test_an_invalid_first_upload_stores_nothing(harness: Harness) -> None:
    assert harness.outcome(harness.upload(_broken(steps=[])())) == "rejected"
    report = harness.report()
    assert report["live_version"] is None and report["errors"][0]["path"] == "steps"
    assert "no live version" in harness.report_text()
    assert harness.stores.scenarios.active("line-welcome") is None
    assert harness.stores.scenarios.active_summaries() == []


def test_the_same_event_twice_makes_one_version(harness: Harness) -> None:
    event = harness.upload(EXAMPLE.read_bytes())
    assert harness.outcome(event) == "activated"
    assert harness.outcome(copy.deepcopy(event)) == "duplicate"
    assert harness.stores.scenarios.versions("line-welcome") == [1]
    assert harness.report()["version"] == 1
    # Uploading the very same content again is not a new version either.
    assert harness.outcome(harness.upload(EXAMPLE.read_bytes())) == "unchanged"
    assert harness.stores.scenarios.versions("line-welcome") == [1]


def test_an_old_event_delivered_late_changes_nothing(harness: Harness) -> None:
    old = harness.upload(EXAMPLE.read_bytes())
    new = harness.upload(_example(name="newer"))
    assert harness.outcome(new) == "activated"
    assert harness.outcome(old) == "superseded"
    assert harness.active_version() == 1 and harness.report()["state"] == "active"
    assert harness.stores.scenarios.active_version("line-welcome").scenario.name == "newer"  # type: ignore[union-attr]


def test_a_file_changed_before_it_was_read_is_left_to_the_next_event(harness: Harness) -> None:
    event = harness.upload(EXAMPLE.read_bytes())
    obj = event["Records"][0]["s3"]["object"]
    del obj["versionId"]  # an unversioned bucket: the etag must still match
    harness.s3.put_object(Bucket=BUCKET, Key=KEY, Body=_dumps(_example(name="changed")).encode())
    assert harness.outcome(event) == "gone"
    assert harness.stores.scenarios.active("line-welcome") is None


def test_deleting_the_file_stops_new_enrolments(harness: Harness) -> None:
    harness.invoke(harness.upload(EXAMPLE.read_bytes()))
    assert harness.outcome(harness.delete()) == "stopped"
    state = harness.stores.scenarios.active("line-welcome")
    assert state is not None and state.state == "stopped" and state.version == 1
    assert harness.stores.scenarios.active_summaries() == []
    report = harness.report()
    assert report["state"] == "stopped" and report["version"] == 1
    assert "停止しました" in report["summary_ja"]
    assert "stopped" in harness.report_text()
    # The same delete again, and a delete of a file never loaded, do nothing.
    assert harness.outcome(harness.delete()) == "ignored"
    assert harness.outcome(harness.delete("scenarios/never-loaded.json")) == "ignored"
    # Uploading it again starts it again, as a new version.
    assert harness.outcome(harness.upload(EXAMPLE.read_bytes())) == "activated"
    assert harness.active_version() == 2


def test_an_id_that_does_not_match_the_file_name_is_refused(harness: Harness) -> None:
    document = _example(id="line-hello")
    assert harness.outcome(harness.upload(document)) == "rejected"
    report = harness.report()
    assert report["errors"][0]["code"] == "id_mismatch" and report["errors"][0]["path"] == "id"
    assert "scenarios/line-hello.json" in report["errors"][0]["message"]
    assert harness.stores.scenarios.active("line-welcome") is None
    assert harness.stores.scenarios.active("line-hello") is None
    # Under its own name it is fine.
    assert harness.outcome(harness.upload(document, "scenarios/line-hello.json")) == "activated"


def test_a_file_name_that_cannot_be_an_id_is_refused(harness: Harness) -> None:
    key = "scenarios/新茶 のお知らせ.json"
    event = harness.upload(EXAMPLE.read_bytes(), key)
    event["Records"][0]["s3"]["object"]["key"] = _sample("put_encoded_key.json")["Records"][0]["s3"][
        "object"
    ]["key"]
    assert harness.outcome(event) == "rejected"
    report = harness.report("新茶 のお知らせ")
    assert report["errors"][0]["path"] == "(the file name)"
    assert "scenarios/<id>.json" in report["errors"][0]["message"]
    assert harness.stores.scenarios.active_summaries() == []


def test_a_folder_marker_is_ignored(harness: Harness) -> None:
    assert harness.outcome(harness.upload(b"", "scenarios/")) == "ignored"


def test_the_sample_events_parse() -> None:
    from aws_lambda_powertools.utilities.data_classes import S3Event
    from cems.scenario.loader import ObjectEvent

    put = ObjectEvent.from_record(S3Event(_sample("put.json")).record)
    assert (put.kind, put.key, put.sequencer) == ("created", KEY, "0062F1A3B4C5D6E7F8")
    assert put.version_id and put.etag
    encoded = ObjectEvent.from_record(S3Event(_sample("put_encoded_key.json")).record)
    assert encoded.key == "scenarios/新茶 のお知らせ.json"
    removed = ObjectEvent.from_record(S3Event(_sample("delete.json")).record)
    assert (removed.kind, removed.etag) == ("removed", "")


def _audit_entries(harness: Harness) -> list[tuple[str, str, str, str | None, str, str]]:
    from datetime import UTC, datetime

    from cems.adapters.dynamodb.audit import DynamoAuditStore
    from cems.audit import AuditLog

    log = AuditLog(DynamoAuditStore("AuditTable", harness.stores.scenarios.client))
    page = log.entries(datetime(2026, 4, 30, tzinfo=UTC), datetime(2026, 5, 2, tzinfo=UTC), limit=50)
    return sorted(
        (e.actor, e.action.value, e.source_ip, e.target, e.outcome.value, str(e.detail.get("outcome")))
        for e in page.entries
    )


def test_each_upload_and_delete_is_one_audit_entry_under_s3s_principal_and_address(harness: Harness) -> None:
    upload = harness.upload(_example())
    assert harness.outcome(upload) == "activated"
    assert harness.outcome(copy.deepcopy(upload)) == "duplicate"  # S3 delivering it again
    bad = harness.upload(_example(steps="not a list"))
    assert harness.outcome(bad) == "rejected"
    removed = harness.delete()
    assert harness.outcome(removed) == "stopped"
    operator, address = "AWS:AIDAEXAMPLEOPERATOR", "203.0.113.10"
    assert _audit_entries(harness) == [
        (operator, "scenario_delete", address, "line-welcome", "allowed", "stopped"),
        (operator, "scenario_upload", address, "line-welcome", "allowed", "activated"),
        (operator, "scenario_upload", address, "line-welcome", "failed", "rejected"),
    ]


def test_an_iam_session_named_after_an_email_address_is_withheld_from_the_log(harness: Harness) -> None:
    upload = harness.upload(_example())
    upload["Records"][0]["userIdentity"]["principalId"] = "AWS:AROAEXAMPLE:hanako@example.jp"
    assert harness.outcome(upload) == "activated"
    assert [entry[0] for entry in _audit_entries(harness)] == ["(withheld)"]
