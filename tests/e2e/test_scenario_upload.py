"""`cems scenario upload` against the local stack: the S3 notification poller runs scenario_loader,
the version goes live in JourneysTable and the report comes back under reports/."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from cems.cli import main

from tests.e2e.conftest import HANG, ROOT, LocalStackClient

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "scenarios" / "line_welcome.json"
BUCKET = "scenariobucket"  # the local stack names buckets after their logical id, lower-cased


def _active(local_stack: LocalStackClient, scenario_id: str) -> dict[str, Any] | None:
    item = local_stack.dynamodb.get_item(
        TableName="JourneysTable",
        Key={"pk": {"S": f"SCN#{scenario_id}"}, "sk": {"S": "ACTIVE"}},
        ConsistentRead=True,
    ).get("Item")
    return None if item is None else {k: next(iter(v.values())) for k, v in item.items()}


def _report(local_stack: LocalStackClient, name: str) -> dict[str, Any]:
    body = local_stack.client("s3").get_object(Bucket=BUCKET, Key=f"reports/{name}.json")["Body"].read()
    report: dict[str, Any] = json.loads(body)
    return report


def _wait_for(check: Any, seconds: float = HANG) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.25)


def test_upload_makes_the_scenario_live_and_a_broken_copy_leaves_it_live(
    local_stack: LocalStackClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))

    # The CLI uploads and waits for the loader's report: the poller picks the upload up within seconds.
    assert main(["scenario", "upload", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert f"uploaded to s3://{BUCKET}/scenarios/line-welcome.json" in out
    assert "Now live as version" in out
    active = _active(local_stack, "line-welcome")
    assert active is not None and active["state"] == "active"
    live = int(active["version"])
    report = _report(local_stack, "line-welcome")
    assert report["valid"] is True and report["state"] == "active" and report["version"] == live

    # A broken copy is refused by the CLI before it is uploaded...
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    document["steps"][0]["type"] = "sned"
    broken = tmp_path / "line_welcome_broken.json"
    broken.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    assert main(["scenario", "upload", str(broken)]) == 1
    assert "steps[0].type" in capsys.readouterr().out

    # ...and when it is put in the bucket anyway, the loader reports it and the old version stays live.
    local_stack.client("s3").put_object(
        Bucket=BUCKET, Key="scenarios/line-welcome.json", Body=broken.read_bytes()
    )
    local_stack.drain()
    report = _wait_for(lambda: (r := _report(local_stack, "line-welcome"))["state"] == "rejected" and r)
    assert report["valid"] is False and report["live_version"] == live
    assert any(e["path"] == "steps[0].type" for e in report["errors"])
    text = local_stack.client("s3").get_object(Bucket=BUCKET, Key="reports/line-welcome.txt")["Body"].read()
    assert "無効なシナリオです" in text.decode("utf-8")
    active = _active(local_stack, "line-welcome")
    assert active is not None and active["state"] == "active" and int(active["version"]) == live

    # Deleting the file stops new enrolments.
    local_stack.client("s3").delete_object(Bucket=BUCKET, Key="scenarios/line-welcome.json")
    local_stack.drain()
    stopped = _wait_for(lambda: (a := _active(local_stack, "line-welcome")) and a["state"] == "stopped" and a)
    assert int(stopped["version"]) == live
