"""Finding, viewing and exporting a customer through the admin Lambda handler under moto (GET
/admin/customers..., JSON errors naming the field), the reads it makes counted where moto receives
them (a GetItem or a Query, never a Scan), and `cems customer find|export` against it."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores, identity_key
from cems.cli import main as cems_main
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor
from cems.models import SegmentMessage

from bench.aws_requests import MotoRequests, key_schemas
from tests.integration.conftest import template_tables

# The admin handler's harness: the handler loaded under moto, and a local HTTP server for the CLI.
from tests.integration.test_admin_handler import NOW, SITE, Invoke, api, invoke  # noqa: F401


@pytest.fixture
def admin(request: pytest.FixtureRequest) -> Invoke:
    """The admin handler (test_admin_handler's `invoke`, over this module's `seeded`)."""
    handler: Invoke = request.getfixturevalue("invoke")
    return handler


@pytest.fixture
def admin_url(request: pytest.FixtureRequest) -> str:
    """The local HTTP server in front of the handler, for the CLI (test_admin_handler's `api`)."""
    url: str = request.getfixturevalue("api")
    return url


EMAIL = "hanako@example.jp"
LINE_ID = "U" + "0123456789abcdef" * 2


def msg(**fields: Any) -> SegmentMessage:
    return SegmentMessage.model_validate(fields)


@pytest.fixture
def seeded(stores: Stores, dynamodb: Any) -> dict[str, str]:
    """u1 (a name, an address, a phone), merged from a visitor a1 who gave another address; a LINE
    friend linked to u1; an enrolment; and a bystander u2."""
    clock.freeze(NOW)
    ingestor = Ingestor(stores.ingest)
    messages = [
        msg(type="identify", messageId="v1", anonymousId="a1", traits={"email": "old@example.jp"}),
        msg(
            type="identify",
            messageId="i1",
            userId="u1",
            traits={"name": "山田花子", "email": EMAIL, "phone": "090-1234-5678", "email_opt_in": True},
        ),
        msg(type="identify", messageId="i2", userId="u1", anonymousId="a1"),
        msg(type="page", messageId="p1", userId="u1", name="top"),
        msg(type="identify", messageId="b1", userId="u2", traits={"email": "u2@example.jp"}),
    ]
    for minute, message in enumerate(messages):
        ingestor.ingest(SITE, [message], NOW + timedelta(minutes=minute))
    known = stores.customers.customer_for(IdentityKey(IdentityKind.USER, "u1")) or ""
    # The LINE contact, as the webhook's account link leaves it.
    dynamodb.update_item(
        TableName="CustomersTable",
        Key={"pk": {"S": f"CUST#{known}"}, "sk": {"S": "PROFILE"}},
        UpdateExpression="SET line_user_id = :l",
        ExpressionAttributeValues={":l": {"S": LINE_ID}},
    )
    dynamodb.put_item(
        TableName="CustomersTable",
        Item={**identity_key(IdentityKey(IdentityKind.LINE, LINE_ID)), "customer_id": {"S": known}},
    )
    dynamodb.put_item(
        TableName="JourneysTable",
        Item={
            "pk": {"S": f"ENR#{known}"},
            "sk": {"S": "welcome"},
            "state": {"S": "active"},
            "sends": {"N": "2"},
            "entered_at": {"S": "2026-11-20T09:00:00.000Z"},
            # The journey's latest messages, as EnrolmentStore writes engine.SentMessage.
            "messages": {
                "L": [
                    {"M": {"step_id": {"S": step}, "channel": {"S": channel}, "at": {"S": at}}}
                    for step, channel, at in (
                        ("hello", "line", "2026-11-20T09:00:00.000Z"),
                        ("coupon", "email", "2026-11-23T09:00:00.000Z"),
                    )
                ]
            },
        },
    )
    return {"customer": known}


def test_a_customer_is_found_by_email_and_by_line_id_with_two_reads_and_no_scan(
    admin: Invoke, seeded: dict[str, str], dynamodb: Any
) -> None:
    counter = MotoRequests(key_schemas(template_tables()))
    with counter.counting():
        with counter.stage_of("email"):
            by_email = admin("GET", "/admin/customers?email=Hanako%40Example.jp")
        with counter.stage_of("line"):
            by_line = admin("GET", f"/admin/customers?line_user_id={LINE_ID}")
    # The lookup's Query and the profile's GetItem; the identity's GetItem and the profile's; and
    # each time the audit entry's PutItem.
    assert counter.by_operation("email") == {
        "dynamodb:Query": 1,
        "dynamodb:GetItem": 1,
        "dynamodb:PutItem": 1,
    }
    assert counter.by_operation("line") == {"dynamodb:GetItem": 2, "dynamodb:PutItem": 1}
    for answer in (by_email, by_line):
        assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
        [found] = answer.json["customers"]
        assert found["customer_id"] == seeded["customer"]
        assert found["profile"]["masked"] is True and found["profile"]["traits"]["email"] == "h***@example.jp"
        assert found["profile"]["line_user_id"] == "U01…ef"
    # The merged-away visitor's address and phone in another spelling find the survivor too.
    for query in (
        "email=old%40example.jp",
        "phone=%2B81%2090%201234%205678",
        "user_id=u1",
        "anonymous_id=a1",
    ):
        [found] = admin("GET", f"/admin/customers?{query}").json["customers"]
        assert found["customer_id"] == seeded["customer"], query
    assert admin("GET", "/admin/customers?email=nobody%40example.jp").json == {"customers": []}
    # One audit entry per lookup: what it was looked up by, never the value.
    entries = admin_audit_entries(dynamodb)
    looked_up_by = sorted(e["detail"]["M"]["by"]["S"] for e in entries if e["action"]["S"] == "customer_view")
    assert looked_up_by == sorted(
        ["email", "line_user_id", "email", "phone", "user_id", "anonymous_id", "email"]
    )
    assert EMAIL not in json.dumps(entries) and LINE_ID not in json.dumps(entries)


def admin_audit_entries(dynamodb: Any) -> list[dict[str, Any]]:
    """Every audit entry (a test's scan; the log itself is read by day partitions)."""
    items: list[dict[str, Any]] = dynamodb.scan(TableName="AuditTable")["Items"]
    return items


def test_a_lookup_needs_exactly_one_usable_query_parameter(admin: Invoke) -> None:
    none = admin("GET", "/admin/customers")
    assert none.status == 400 and (none.json["error"], none.json["field"]) == ("lookup_required", "query")
    unknown = admin("GET", "/admin/customers?mail=x%40example.jp")
    assert unknown.status == 400 and unknown.json["field"] == "query"
    both = admin("GET", "/admin/customers?email=a%40example.jp&phone=09012345678")
    assert both.status == 400 and (both.json["error"], both.json["field"]) == ("one_lookup_only", "phone")
    for query, field in (
        ("email=not-an-address", "email"),
        ("phone=12", "phone"),
        ("user_id=%20", "user_id"),
    ):
        bad = admin("GET", f"/admin/customers?{query}")
        assert bad.status == 400 and bad.json["field"] == field, query
        assert bad.json["error"] == f"invalid_{field}"


def test_a_customer_viewed_masked_and_unmasked(admin: Invoke, seeded: dict[str, str]) -> None:
    customer = seeded["customer"]
    masked = admin("GET", f"/admin/customers/{customer}")
    assert masked.status == 200 and masked.json["masked"] is True
    assert masked.json["profile"]["traits"]["name"] == "山*"
    timeline = masked.json["timeline"]
    assert timeline["events"][0]["message_id"] == "p1"  # newest first
    assert [e["scenario_id"] for e in timeline["enrolments"]] == ["welcome"]
    assert [(m["scenario_id"], m["step_id"], m["channel"]) for m in timeline["messages"]] == [
        ("welcome", "coupon", "email"),  # newest first
        ("welcome", "hello", "line"),
    ]
    assert EMAIL not in masked.text and "山田花子" not in masked.text and LINE_ID not in masked.text
    plain = admin("GET", f"/admin/customers/{customer}?unmasked=true")
    assert plain.status == 200 and plain.json["profile"]["traits"]["email"] == EMAIL
    bad = admin("GET", f"/admin/customers/{customer}?unmasked=yes")
    assert bad.status == 400 and bad.json["field"] == "unmasked"
    unknown = admin("GET", "/admin/customers/cus_unknown")
    assert unknown.status == 404 and (unknown.json["error"], unknown.json["field"]) == (
        "customer_not_found",
        "id",
    )


def test_an_export_of_the_whole_person(admin: Invoke, seeded: dict[str, str]) -> None:
    answer = admin("GET", f"/admin/customers/{seeded['customer']}/export")
    assert answer.status == 200
    document = answer.json
    assert document["format"] == "cems.customer-export/1" and len(document["customer_ids"]) == 2
    assert document["profiles"][0]["traits"]["email"] == EMAIL
    assert {i["kind"] for i in document["identities"]} == {"user", "anon", "line"}
    assert [e["message_id"] for e in document["events"]] == ["v1", "i1", "i2", "p1"]
    enrolment = document["journeys"][seeded["customer"]]["enrolments"][0]
    assert (enrolment["scenario_id"], enrolment["sends"]) == ("welcome", 2)
    assert "u2@example.jp" not in answer.text  # the bystander
    missing = admin("GET", "/admin/customers/cus_unknown/export")
    assert missing.status == 404 and missing.json["field"] == "id"


def test_cems_customer_find_and_export(
    admin_url: str, seeded: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cems_main(["customer", "find", "--email", EMAIL, "--url", admin_url]) == 0
    out = capsys.readouterr().out
    assert seeded["customer"] in out and "h***@example.jp" in out and EMAIL not in out
    assert cems_main(["customer", "find", "--line-user-id", LINE_ID, "--url", admin_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["customers"][0]["customer_id"] == seeded["customer"]
    assert cems_main(["customer", "find", "--phone", "03-0000-0000", "--url", admin_url]) == 1
    assert "no customer found" in capsys.readouterr().err
    assert cems_main(["customer", "find", "--email", "bad", "--url", admin_url]) == 1
    assert "invalid_email" in capsys.readouterr().err
    out_file = tmp_path / "export.json"
    assert (
        cems_main(["customer", "export", seeded["customer"], "--url", admin_url, "--out", str(out_file)]) == 0
    )
    assert json.loads(out_file.read_text(encoding="utf-8"))["profiles"][0]["traits"]["email"] == EMAIL
    if os.name == "posix":
        assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert cems_main(["customer", "export", "cus_unknown", "--url", admin_url]) == 1
    assert "customer_not_found" in capsys.readouterr().err
