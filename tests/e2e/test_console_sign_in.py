"""The console on the local stack: an operator added with `cems user add` signs in, and the console's
API answers only with a token the stack's JWT authorizer verifies against moto's Cognito, as API
Gateway's would on a stage (issue 12)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from cems.cli import main as cems

from tests.e2e.conftest import LocalStackClient
from tests.e2e.test_collect_http import Answer, send

pytestmark = pytest.mark.e2e

PASSWORD = "Console-Test-2026"


def sign_in(stack: LocalStackClient, username: str, password: str) -> Answer:
    body = json.dumps({"username": username, "password": password}).encode()
    return send(f"{stack.http_url}/admin/console/sign-in", "POST", body, {"content-type": "application/json"})


def me(stack: LocalStackClient, token: str | None) -> Answer:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    return send(f"{stack.http_url}/admin/console/me", headers=headers)


def audit_actions(stack: LocalStackClient, actor: str, target: str | None = None) -> list[str]:
    """The actions the audit table holds for `actor` (a scan: a test's check, not the console's way)."""
    items: list[dict[str, Any]] = stack.client("dynamodb").scan(TableName="AuditTable")["Items"]
    return sorted(
        item["action"]["S"]
        for item in items
        if item["actor"]["S"] == actor and (target is None or item.get("target", {}).get("S") == target)
    )


def test_an_operator_added_by_the_cli_signs_in_and_the_api_needs_a_verified_token(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"analyst-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CEMS_AWS_PORT", local_stack.aws_url.rsplit(":", 1)[1])
    assert cems(["user", "add", name, "--role", "analyst", "--password", PASSWORD]) == 0
    assert "アナリスト" in capsys.readouterr().out

    page = send(f"{local_stack.http_url}/console")
    assert page.status == 200 and b'<form id="sign-in"' in page.body
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    assert sign_in(local_stack, name, "Wrong-Password-9").status == 401
    signed_in = sign_in(local_stack, name, PASSWORD)
    assert signed_in.status == 200, signed_in.body
    token = signed_in.json["idToken"]

    answer = me(local_stack, token)
    assert answer.status == 200, answer.body
    assert answer.json["name"] == name
    assert [r["role"] for r in answer.json["roles"]] == ["analyst"]
    assert "customers_unmask" not in answer.json["permissions"]
    assert "reports_view" in answer.json["permissions"]

    # What API Gateway's JWT authorizer refuses never reaches the function: 401, no data.
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["cognito:groups"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    for bad in (None, "", "not-a-token", f"{header}.{forged}.{signature}", token[:-4] + "AAAA"):
        refused = me(local_stack, bad)
        assert refused.status == 401, bad
        assert refused.json == {"message": "Unauthorized"}

    assert audit_actions(local_stack, name) == ["sign_in", "sign_in_failed"]
    assert audit_actions(local_stack, "local", target=name) == ["user_add"]


def test_an_operators_role_is_changed_by_the_cli_and_the_next_token_carries_it(
    local_stack: LocalStackClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"writer-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CEMS_AWS_PORT", local_stack.aws_url.rsplit(":", 1)[1])
    assert cems(["user", "add", name, "--role", "content_writer", "--password", PASSWORD]) == 0
    before = me(local_stack, sign_in(local_stack, name, PASSWORD).json["idToken"])
    assert [r["role"] for r in before.json["roles"]] == ["content_writer"]

    assert cems(["user", "role", name, "--role", "analyst"]) == 0
    assert "アナリスト" in capsys.readouterr().out
    after = me(local_stack, sign_in(local_stack, name, PASSWORD).json["idToken"])
    assert [r["role"] for r in after.json["roles"]] == ["analyst"]
    assert "customers_view" in after.json["permissions"]

    assert cems(["user", "role", f"nobody-{uuid.uuid4().hex[:6]}", "--role", "admin"]) == 1
    assert audit_actions(local_stack, "local", target=name) == ["user_add", "user_role_change"]
