"""The local stack's pure parts: template intrinsics, routes, payload v2 events, schedules, filters."""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cems import clock
from cems.local.cfn import Template, function_specs
from cems.local.functions import LocalFunction
from cems.local.http import LocalRequest, Route, http_api_event, response_from_lambda
from cems.local.pollers import SchedulePoller, matches_filters, next_cron_time

ROOT = Path(__file__).parents[2]

TEMPLATE = """
Parameters:
  Stage:
    Type: String
    Default: dev
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Environment:
        Variables:
          QUEUE_URL: !Ref Queue
          QUEUE_ARN: !GetAtt Queue.Arn
          NAME: !Sub "cems-${Stage}-${AWS::Region}"
          LEVEL: !If [IsProd, INFO, DEBUG]
          JOINED: !Join ["-", [a, !Ref Stage]]
"""


@pytest.fixture
def template(tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    loaded = Template.load(path)
    loaded.refs["Queue"] = "http://127.0.0.1:4566/123456789012/Queue"
    loaded.attributes[("Queue", "Arn")] = "arn:aws:sqs:ap-northeast-1:123456789012:Queue"
    return loaded


def test_intrinsics_resolve_against_local_resources(template: Template) -> None:
    (spec,) = function_specs(template)
    assert spec.environment == {
        "QUEUE_URL": "http://127.0.0.1:4566/123456789012/Queue",
        "QUEUE_ARN": "arn:aws:sqs:ap-northeast-1:123456789012:Queue",
        "NAME": "cems-dev-ap-northeast-1",
        "LEVEL": "DEBUG",
        "JOINED": "a-dev",
    }
    assert spec.module_file == template.directory / "fn" / "app.py"
    template.parameter_overrides["Stage"] = "prod"
    assert function_specs(template)[0].environment["LEVEL"] == "INFO"


def test_an_unknown_reference_fails_loudly(template: Template) -> None:
    with pytest.raises(KeyError, match="Nope"):
        template.resolve({"Ref": "Nope"})


def test_the_real_template_declares_collect_routes() -> None:
    specs = {s.logical_id: s for s in function_specs(Template.load(ROOT / "template.yaml"))}
    events = specs["CollectFunction"].events
    paths = {e["Properties"]["Path"] for e in events.values() if e["Type"] == "HttpApi"}
    assert {"/v1/{kind}", "/tag.js"} <= paths


def _route(method: str, path: str) -> Route:
    return Route(method=method, path=path, function=LocalFunction.__new__(LocalFunction))


def test_routes_match_like_api_gateway() -> None:
    assert _route("ANY", "/v1/{kind}").match("POST", "/v1/track") == {"kind": "track"}
    assert _route("ANY", "/v1/{kind}").match("POST", "/v1/a/b") is None
    assert _route("GET", "/tag.js").match("POST", "/tag.js") is None
    assert _route("GET", "/r/{proxy+}").match("GET", "/r/a/b") == {"proxy": "a/b"}
    ordered = sorted(
        [
            _route("ANY", "$default"),
            _route("ANY", "/{proxy+}"),
            _route("ANY", "/v1/{kind}"),
            _route("GET", "/v1/x"),
        ],
        key=Route.specificity,
    )
    assert [r.path for r in ordered] == ["/v1/x", "/v1/{kind}", "/{proxy+}", "$default"]


def test_payload_v2_event_keeps_text_bodies_and_base64s_binary() -> None:
    request = LocalRequest(
        method="POST",
        path="/v1/track",
        query="a=1",
        headers={"content-type": "text/plain", "cookie": "x=1; y=2", "host": "127.0.0.1:3000"},
        body=b"{}",
        source_ip="127.0.0.1",
    )
    event = http_api_event(request, _route("ANY", "/v1/{kind}"), {"kind": "track"})
    assert (event["body"], event["isBase64Encoded"]) == ("{}", False)
    assert event["cookies"] == ["x=1", "y=2"]
    assert event["routeKey"] == "ANY /v1/{kind}"
    assert event["pathParameters"] == {"kind": "track"}
    assert event["queryStringParameters"] == {"a": "1"}
    binary = LocalRequest(
        "POST", "/v1/b", "", {"content-type": "application/octet-stream"}, b"\x1f\x8b", "::1"
    )
    event = http_api_event(binary, _route("ANY", "/v1/{kind}"), {})
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x1f\x8b"


def test_lambda_answers_become_http_responses() -> None:
    response = response_from_lambda(
        {
            "statusCode": 201,
            "headers": {"X-A": "1"},
            "cookies": ["c=1"],
            "body": "aGk=",
            "isBase64Encoded": True,
        }
    )
    assert (response.status, response.body, response.headers, response.cookies) == (
        201,
        b"hi",
        {"X-A": "1"},
        ["c=1"],
    )
    plain = response_from_lambda({"ok": True})
    assert (plain.status, json.loads(plain.body)) == (200, {"ok": True})


def test_cron_follows_eventbridge_fields_in_utc() -> None:
    after = datetime(2026, 11, 23, 10, 7, tzinfo=UTC)  # a Monday
    assert next_cron_time("0/15 * * * ? *", after) == datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    assert next_cron_time("0 1 * * ? *", after) == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert next_cron_time("30 0 ? * SUN *", after) == datetime(2026, 11, 29, 0, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="six fields"):
        next_cron_time("* * * * *", after)


class _Recorder:
    name = "Recorder"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def test_schedules_fire_on_the_cems_clock() -> None:
    clock.freeze(datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC))
    try:
        recorder = _Recorder()
        poller = SchedulePoller(recorder, "Tick", "rate(1 minute)", None)  # type: ignore[arg-type]
        assert poller.poll() == 0
        clock.advance(seconds=61)
        assert poller.poll() == 1
        assert poller.poll() == 0
        assert recorder.events[0]["detail-type"] == "Scheduled Event"
        assert recorder.events[0]["time"] == "2026-11-23T10:01:31Z"
    finally:
        clock.reset()


def test_event_filters_match_like_lambda_event_filtering() -> None:
    criteria = {
        "Filters": [
            {
                "Pattern": json.dumps(
                    {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"type": {"S": [{"prefix": "tr"}]}}}}
                )
            }
        ]
    }
    insert = {"eventName": "INSERT", "dynamodb": {"NewImage": {"type": {"S": "track"}}}}
    assert matches_filters(insert, criteria)
    assert not matches_filters({**insert, "eventName": "MODIFY"}, criteria)
    assert not matches_filters(
        {"eventName": "INSERT", "dynamodb": {"NewImage": {"type": {"S": "page"}}}}, criteria
    )
    assert matches_filters({"anything": 1}, None)
    numeric = {"Filters": [{"Pattern": json.dumps({"body": {"n": [{"numeric": [">", 1, "<=", 5]}]}})}]}
    assert matches_filters({"body": {"n": 5}}, numeric)
    assert not matches_filters({"body": {"n": 6}}, numeric)
    absent = {"Filters": [{"Pattern": json.dumps({"body": {"x": [{"exists": False}]}})}]}
    assert matches_filters({"body": {}}, absent)
    assert not matches_filters({"body": {"x": 1}}, absent)


def test_clock_durations_read_like_the_cli_shows_them() -> None:
    from cems.local.stack import parse_advance

    assert parse_advance("+3d") == 3 * 86400
    assert parse_advance("1d12h") == 36 * 3600
    assert parse_advance("+90m") == 5400
    assert parse_advance("30s") == 30
    for bad in ("", "+", "3 days", "-1d"):
        with pytest.raises(ValueError, match="duration"):
            parse_advance(bad)
