"""Operators: signing in to the console, who the signed-in caller is, and adding operators.

Sign-in goes through CEMS (POST /admin/console/sign-in) rather than straight from the browser to
Cognito, so that every attempt, failed ones included, lands in the audit log with its source address,
and the address ranges apply before a password is even tried. Cognito checks the password and issues
the tokens; every later console request carries the ID token, which API Gateway's JWT authorizer
verifies before the function runs (template.yaml: OperatorJwt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cems.audit import AuditAction, AuditLog, AuditOutcome, withheld_if_personal
from cems.console.access import Operator, Role, SourceAddresses, groups_claim
from cems.errors import ClientError
from cems.jsonbody import load_object

# A user name and a password fit in far less; anything longer is refused before it is parsed.
MAX_SIGN_IN_BYTES = 2048


class SignInRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    # An operator's name is a handle (cems user add), never an email address: it goes into the audit log.
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    password: str = Field(min_length=1, max_length=256)


@dataclass(frozen=True)
class Tokens:
    """What a successful sign-in hands the browser: the ID token it sends as `Authorization`."""

    id_token: str
    expires_in: int


class OperatorAccounts(Protocol):
    """The operators' accounts (Cognito's user pool on a stage, moto's locally)."""

    def authenticate(self, username: str, password: str) -> Tokens | None:
        """Tokens, or None for a wrong user name or password (never saying which)."""
        ...

    def roles_of(self, username: str) -> frozenset[Role]: ...

    def add(self, username: str, role: Role, password: str) -> None:
        """A new operator in `role` with a permanent password; ClientError 409 if the name is taken."""
        ...


@dataclass(frozen=True)
class SignedIn:
    operator: Operator
    tokens: Tokens


class Console:
    """The checks every console request goes through, and signing in."""

    def __init__(self, accounts: OperatorAccounts, audit: AuditLog, addresses: SourceAddresses) -> None:
        self.accounts = accounts
        self.audit = audit
        self.addresses = addresses

    def check_source(self, source_ip: str | None, actor: str) -> None:
        """403 for an address outside the operators' ranges, recorded before it is raised."""
        if not self.addresses.allows(source_ip):
            self.audit.record(
                actor=actor, action=AuditAction.IP_REFUSED, source_ip=source_ip, outcome=AuditOutcome.REFUSED
            )
            self.addresses.require(source_ip)

    def sign_in(self, body: bytes, source_ip: str | None) -> SignedIn:
        if len(body) > MAX_SIGN_IN_BYTES:
            raise ClientError(
                413, "too_large", "the sign-in body is too large", field="body", limit=MAX_SIGN_IN_BYTES
            )
        try:
            request = SignInRequest.model_validate(load_object(body, max_depth=2))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise ClientError(
                400,
                "invalid_sign_in",
                "ユーザー名とパスワードを入力してください / give a user name and a password",
                field=field,
            ) from None
        self.check_source(source_ip, _actor(request.username))
        tokens = self.accounts.authenticate(request.username, request.password)
        if tokens is None:
            self.audit.record(
                actor=_actor(request.username),
                action=AuditAction.SIGN_IN_FAILED,
                source_ip=source_ip,
                outcome=AuditOutcome.REFUSED,
            )
            raise ClientError(
                401,
                "sign_in_failed",
                "ユーザー名またはパスワードが違います / wrong user name or password",
                field="credentials",
            )
        operator = Operator(request.username, self.accounts.roles_of(request.username))
        self.audit.record(
            actor=operator.name,
            action=AuditAction.SIGN_IN,
            source_ip=source_ip,
            role=_main_role(operator),
        )
        return SignedIn(operator, tokens)

    def caller(self, claims: Mapping[str, object], source_ip: str | None) -> Operator:
        """The operator a verified token names, once their address is allowed. API Gateway checked the
        token; without its claims (a route left without the authorizer) the answer is 401."""
        name = claims.get("cognito:username")
        if not isinstance(name, str) or not name:
            raise ClientError(
                401, "unauthorized", "サインインしてください / sign in first", field="authorization"
            )
        self.check_source(source_ip, name)
        return Operator.from_groups(name, groups_claim(claims))


def _actor(username: str) -> str:
    """The name a sign-in attempt gave, for the audit log (anyone may type a phone number there)."""
    return withheld_if_personal(username)


def _main_role(operator: Operator) -> Role | None:
    """The most privileged of the operator's roles, for the audit line."""
    for role in Role:  # declared from most to least privileged
        if role in operator.roles:
            return role
    return None
