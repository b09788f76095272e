"""Roles, permissions and the operators' source-address ranges (issue 12)."""

from __future__ import annotations

import pytest
from cems.console.access import (
    ROLE_PERMISSIONS,
    Operator,
    Permission,
    Role,
    SourceAddresses,
    groups_claim,
)
from cems.errors import ClientError

P = Permission


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.ADMIN, set(Permission)),
        (
            Role.SCENARIO_DESIGNER,
            {
                P.SCENARIOS_VIEW,
                P.SCENARIOS_WRITE,
                P.TEST_SEND,
                P.REPORTS_VIEW,
                P.AUDIENCE_COUNT,
                P.CUSTOMERS_VIEW,
            },
        ),
        (Role.CONTENT_WRITER, {P.SCENARIOS_VIEW, P.TEST_SEND}),
        (Role.ANALYST, {P.SCENARIOS_VIEW, P.REPORTS_VIEW, P.AUDIENCE_COUNT, P.CUSTOMERS_VIEW}),
    ],
)
def test_each_role_has_exactly_the_permissions_of_the_issue_table(
    role: Role, allowed: set[Permission]
) -> None:
    operator = Operator("o", frozenset({role}))
    assert operator.permissions == allowed
    for permission in Permission:
        assert operator.may(permission) is (permission in allowed)


def test_only_the_admin_unmasks_exports_erases_manages_users_and_reads_the_audit_log() -> None:
    for permission in (
        P.CUSTOMERS_UNMASK,
        P.CUSTOMERS_EXPORT,
        P.CUSTOMERS_ERASE,
        P.USERS_MANAGE,
        P.AUDIT_VIEW,
    ):
        assert [role for role, granted in ROLE_PERMISSIONS.items() if permission in granted] == [Role.ADMIN]


def test_the_content_writer_sees_no_customer_data() -> None:
    writer = Operator("w", frozenset({Role.CONTENT_WRITER}))
    assert not any(p.value.startswith("customers_") for p in writer.permissions)


def test_a_refusal_is_403_naming_the_permission() -> None:
    analyst = Operator.from_groups("a", ["analyst"])
    with pytest.raises(ClientError) as refused:
        analyst.require(P.CUSTOMERS_UNMASK)
    assert refused.value.status == 403
    assert refused.value.body()["error"] == "forbidden"
    assert refused.value.body()["field"] == "customers_unmask"
    analyst.require(P.CUSTOMERS_VIEW)  # allowed: no error


def test_groups_that_are_no_role_grant_nothing_and_several_roles_add_up() -> None:
    assert Operator.from_groups("x", ["everyone", "Admin"]).permissions == frozenset()
    both = Operator.from_groups("y", ["content_writer", "analyst"])
    assert both.may(P.TEST_SEND) and both.may(P.REPORTS_VIEW) and not both.may(P.CUSTOMERS_UNMASK)


@pytest.mark.parametrize(
    ("claims", "groups"),
    [
        ({"cognito:groups": ["admin", "analyst"]}, ["admin", "analyst"]),
        ({"cognito:groups": "[admin analyst]"}, ["admin", "analyst"]),  # as API Gateway passes it on
        ({"cognito:groups": "analyst"}, ["analyst"]),
        ({}, []),
        ({"cognito:groups": 3}, []),
    ],
)
def test_the_groups_claim_is_read_as_a_token_or_api_gateway_carries_it(
    claims: dict[str, object], groups: list[str]
) -> None:
    assert groups_claim(claims) == groups


def test_an_empty_range_setting_allows_any_address() -> None:
    anywhere = SourceAddresses.parse("")
    assert anywhere.allows_any and anywhere.allows("198.51.100.7") and anywhere.allows(None)


def test_addresses_inside_a_range_pass_and_others_get_403() -> None:
    office = SourceAddresses.parse("203.0.113.0/24, 2001:db8:10::/48 198.51.100.9")
    for inside in ("203.0.113.1", "203.0.113.254", "2001:db8:10::5", "198.51.100.9", "::ffff:203.0.113.7"):
        assert office.allows(inside), inside
    for outside in (
        "203.0.114.1",
        "2001:db8:11::1",
        "198.51.100.10",
        "",
        None,
        "not-an-ip",
        "::ffff:10.0.0.1",
    ):
        assert not office.allows(outside), outside
    with pytest.raises(ClientError) as refused:
        office.require("192.0.2.1")
    assert refused.value.status == 403 and refused.value.code == "ip_not_allowed"


def test_an_unreadable_range_setting_stops_init_naming_the_range() -> None:
    with pytest.raises(ValueError, match=r"300\.1\.1\.0/24"):
        SourceAddresses.parse("203.0.113.0/24,300.1.1.0/24")
