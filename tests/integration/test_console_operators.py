"""Signing in to the console (cems.console.operators) against moto's Cognito, with the audit log in
memory: every attempt leaves exactly one entry, the address ranges apply before any password is
tried, and bad input gets a clear 4xx (issue 12)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cems.adapters.cognito import CognitoOperatorAccounts
from cems.audit import AuditAction, AuditLog, AuditOutcome
from cems.console.access import Permission, Role, SourceAddresses
from cems.console.operators import MAX_SIGN_IN_BYTES, Console
from cems.errors import ClientError
from moto import mock_aws

from tests.fakes.audit import InMemoryAuditStore

PASSWORD = "Correct-Horse-42"


@pytest.fixture
def cognito() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cognito-idp", region_name="ap-northeast-1")


@pytest.fixture
def accounts(cognito: Any) -> CognitoOperatorAccounts:
    pool = cognito.create_user_pool(PoolName="cems-dev-operators")["UserPool"]["Id"]
    client = cognito.create_user_pool_client(
        UserPoolId=pool, ClientName="cems-console", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    for role in Role:
        cognito.create_group(UserPoolId=pool, GroupName=role.value)
    return CognitoOperatorAccounts(cognito, pool, client)


def console_of(accounts: CognitoOperatorAccounts, ranges: str = "") -> tuple[Console, InMemoryAuditStore]:
    store = InMemoryAuditStore()
    return Console(accounts, AuditLog(store), SourceAddresses.parse(ranges)), store


def body(username: str, password: str) -> bytes:
    return f'{{"username": "{username}", "password": "{password}"}}'.encode()


def entries(store: InMemoryAuditStore) -> list[tuple[str, AuditAction, AuditOutcome]]:
    return [(e.actor, e.action, e.outcome) for e in sorted(store.entries.values(), key=lambda e: e.key)]


def test_an_operator_signs_in_with_their_role_and_it_is_recorded_once(
    accounts: CognitoOperatorAccounts,
) -> None:
    accounts.add("hanako", Role.ANALYST, PASSWORD)
    console, store = console_of(accounts)
    signed_in = console.sign_in(body("hanako", PASSWORD), "203.0.113.5")
    assert signed_in.operator.roles == {Role.ANALYST}
    assert signed_in.tokens.id_token.count(".") == 2 and signed_in.tokens.expires_in > 0
    assert entries(store) == [("hanako", AuditAction.SIGN_IN, AuditOutcome.ALLOWED)]
    (entry,) = store.entries.values()
    assert entry.role is Role.ANALYST and entry.source_ip == "203.0.113.5"


def test_a_wrong_password_is_401_and_a_failed_sign_in_entry(accounts: CognitoOperatorAccounts) -> None:
    accounts.add("hanako", Role.ANALYST, PASSWORD)
    console, store = console_of(accounts)
    for username in ("hanako", "nobody"):  # a wrong password and an unknown user answer alike
        with pytest.raises(ClientError) as refused:
            console.sign_in(body(username, "Wrong-Password-1"), "203.0.113.5")
        assert (refused.value.status, refused.value.code) == (401, "sign_in_failed")
    assert entries(store) == [
        ("hanako", AuditAction.SIGN_IN_FAILED, AuditOutcome.REFUSED),
        ("nobody", AuditAction.SIGN_IN_FAILED, AuditOutcome.REFUSED),
    ]


def test_a_user_name_that_looks_like_a_phone_number_is_withheld_from_the_log(
    accounts: CognitoOperatorAccounts,
) -> None:
    console, store = console_of(accounts)
    with pytest.raises(ClientError):
        console.sign_in(body("09012345678", "Wrong-Password-1"), "203.0.113.5")
    assert entries(store) == [("(withheld)", AuditAction.SIGN_IN_FAILED, AuditOutcome.REFUSED)]


def test_an_address_outside_the_ranges_is_refused_before_the_password_is_tried(
    accounts: CognitoOperatorAccounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts.add("hanako", Role.ADMIN, PASSWORD)
    console, store = console_of(accounts, "203.0.113.0/24")
    tried: list[str] = []
    monkeypatch.setattr(accounts, "authenticate", lambda username, password: tried.append(username))
    with pytest.raises(ClientError) as refused:
        console.sign_in(body("hanako", PASSWORD), "198.51.100.1")
    assert (refused.value.status, refused.value.code) == (403, "ip_not_allowed")
    assert tried == []
    assert entries(store) == [("hanako", AuditAction.IP_REFUSED, AuditOutcome.REFUSED)]


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        (b"not json", 400, "body"),
        (b'{"username": "hanako"}', 400, "password"),
        (b'{"username": "a@example.jp", "password": "x"}', 400, "username"),
        (b'{"username": "hanako", "password": "x", "extra": 1}', 400, "extra"),
        (b"[]", 400, "body"),
        (b"x" * (MAX_SIGN_IN_BYTES + 1), 413, "body"),
    ],
)
def test_bad_sign_in_bodies_get_a_clear_4xx_and_no_entry(
    accounts: CognitoOperatorAccounts, raw: bytes, status: int, field: str
) -> None:
    console, store = console_of(accounts)
    with pytest.raises(ClientError) as refused:
        console.sign_in(raw, "203.0.113.5")
    assert (refused.value.status, refused.value.field) == (status, field)
    assert not store.entries


def test_the_caller_is_the_operator_the_verified_claims_name(accounts: CognitoOperatorAccounts) -> None:
    console, store = console_of(accounts, "203.0.113.0/24")
    operator = console.caller({"cognito:username": "hanako", "cognito:groups": "[analyst]"}, "203.0.113.9")
    assert operator.roles == {Role.ANALYST} and not operator.may(Permission.CUSTOMERS_UNMASK)
    with pytest.raises(ClientError) as unsigned:
        console.caller({}, "203.0.113.9")
    assert unsigned.value.status == 401
    with pytest.raises(ClientError) as outside:
        console.caller({"cognito:username": "hanako"}, "192.0.2.1")
    assert outside.value.status == 403
    assert entries(store) == [("hanako", AuditAction.IP_REFUSED, AuditOutcome.REFUSED)]


def test_adding_a_name_twice_is_409(accounts: CognitoOperatorAccounts) -> None:
    accounts.add("taro", Role.CONTENT_WRITER, PASSWORD)
    with pytest.raises(ClientError) as taken:
        accounts.add("taro", Role.ADMIN, PASSWORD)
    assert (taken.value.status, taken.value.code) == (409, "operator_exists")
    assert accounts.roles_of("taro") == {Role.CONTENT_WRITER}
