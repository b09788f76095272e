"""Who may do what in the console and the admin API: four roles, their permissions, and the range of
source addresses operators may come from.

Roles are Cognito groups (template.yaml: OperatorPool): an operator's token names them in its
`cognito:groups` claim, which API Gateway's JWT authorizer has already verified. Each route names
the one permission it needs and checks it on the server: hiding a button is not a permission.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from cems.errors import ClientError


class Role(StrEnum):
    """The four roles of a shop's CRM team. The values are the Cognito group names."""

    ADMIN = "admin"
    SCENARIO_DESIGNER = "scenario_designer"
    CONTENT_WRITER = "content_writer"
    ANALYST = "analyst"

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS: Mapping[Role, str] = {
    Role.ADMIN: "管理者 / Administrator",
    Role.SCENARIO_DESIGNER: "シナリオ設定者 / Scenario designer",
    Role.CONTENT_WRITER: "コンテンツ設定者 / Content writer",
    Role.ANALYST: "アナリスト / Analyst",
}


class Permission(StrEnum):
    """One thing a route lets an operator do."""

    SCENARIOS_VIEW = "scenarios_view"  # list, diagrams, versions, upload reports
    SCENARIOS_WRITE = "scenarios_write"  # upload and stop
    TEST_SEND = "test_send"  # test-send and preview message content
    REPORTS_VIEW = "reports_view"  # counts per step, reports, charts
    AUDIENCE_COUNT = "audience_count"
    CUSTOMERS_VIEW = "customers_view"  # find and view, masked
    CUSTOMERS_UNMASK = "customers_unmask"
    CUSTOMERS_EXPORT = "customers_export"  # APPI disclosure (開示請求)
    CUSTOMERS_ERASE = "customers_erase"
    USERS_MANAGE = "users_manage"
    AUDIT_VIEW = "audit_view"


# The table, row by row. The admin has every permission; the others only what is listed.
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.SCENARIO_DESIGNER: frozenset(
        {
            Permission.SCENARIOS_VIEW,
            Permission.SCENARIOS_WRITE,
            Permission.TEST_SEND,
            Permission.REPORTS_VIEW,
            Permission.AUDIENCE_COUNT,
            Permission.CUSTOMERS_VIEW,
        }
    ),
    # Content writers see scenarios and preview content, and no customer data at all.
    Role.CONTENT_WRITER: frozenset({Permission.SCENARIOS_VIEW, Permission.TEST_SEND}),
    # Read-only: reports, audience counts and masked customers; seeing scenarios is what makes a
    # report readable.
    Role.ANALYST: frozenset(
        {
            Permission.SCENARIOS_VIEW,
            Permission.REPORTS_VIEW,
            Permission.AUDIENCE_COUNT,
            Permission.CUSTOMERS_VIEW,
        }
    ),
}


@dataclass(frozen=True)
class Operator:
    """A signed-in operator: the name the token carries and the roles its groups name."""

    name: str
    roles: frozenset[Role]

    @classmethod
    def from_groups(cls, name: str, groups: Iterable[str]) -> Operator:
        """Groups that are no role (a pool may hold others) give nothing."""
        known = {role.value: role for role in Role}
        return cls(name, frozenset(known[group] for group in groups if group in known))

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset().union(*(ROLE_PERMISSIONS[role] for role in self.roles))

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        """403 with the permission named, when no role of the operator's grants it."""
        if not self.may(permission):
            raise ClientError(
                403,
                "forbidden",
                f"この操作の権限がありません / your role does not allow this ({permission.value})",
                field=permission.value,
            )


def groups_claim(claims: Mapping[str, object]) -> list[str]:
    """The `cognito:groups` claim as a list. API Gateway's JWT authorizer hands claims on as strings,
    so a list arrives as "[admin analyst]"; a token read directly has a JSON list."""
    value = claims.get("cognito:groups")
    if isinstance(value, list):
        return [str(group) for group in value]
    if isinstance(value, str):
        return value.strip("[]").replace(",", " ").split()
    return []


class SourceAddresses:
    """The CIDR ranges operators may come from (the template's OperatorSourceCidrs); empty allows any.

    A setting that cannot be read stops the function at init rather than letting everyone in.
    """

    def __init__(self, ranges: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.ranges = tuple(ranges)

    @classmethod
    def parse(cls, setting: str) -> SourceAddresses:
        """Comma- or space-separated CIDRs; a bare address is a /32 or /128."""
        ranges = []
        for part in setting.replace(",", " ").split():
            try:
                ranges.append(ipaddress.ip_network(part, strict=False))
            except ValueError as error:
                raise ValueError(f"OperatorSourceCidrs: {part!r} is not an address range ({error})") from None
        return cls(ranges)

    @property
    def allows_any(self) -> bool:
        return not self.ranges

    def allows(self, source_ip: str | None) -> bool:
        if self.allows_any:
            return True
        if not source_ip:
            return False
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return False
        # An IPv4 client reaching an IPv6 listener arrives as ::ffff:a.b.c.d; judge the IPv4 address.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == network.version and address in network for network in self.ranges)

    def require(self, source_ip: str | None) -> None:
        """403 for an address outside every range (the caller records it in the audit log)."""
        if not self.allows(source_ip):
            raise ClientError(
                403,
                "ip_not_allowed",
                "この接続元からは利用できません / operators may not connect from this address",
                field="sourceIp",
            )
