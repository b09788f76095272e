"""`cems user add NAME --role ROLE`: an operator of the console, on the local stack or a stage.

The CLI works with IAM (the caller's AWS credentials), as automation does; the operator it adds signs
in to the console with Cognito. The addition is an audit entry, under the IAM principal that made it.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.config import Config

from cems.audit import AuditAction, AuditLog, withheld_if_personal
from cems.console.access import ROLE_LABELS, Role

# A handle, not an email address or a name: it is what the audit log names the operator by.
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
LOCAL_POOL_SUFFIX = "-operators"
CLIENT_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=15)


def register(commands: Any) -> None:
    """Adds `user` to the `cems` sub-commands; `user add` and `user role` set `handler`."""
    user = commands.add_parser("user", help="console operators / コンソールの利用者")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="add an operator with a role / 利用者の追加")
    add.add_argument(
        "name", help="the operator's user name: lower-case letters, digits, . _ - (not an email)"
    )
    add.add_argument(
        "--role",
        required=True,
        choices=[role.value for role in Role],
        help="; ".join(f"{role.value}: {label}" for role, label in ROLE_LABELS.items()),
    )
    add.add_argument(
        "--password", help="the first password (default: a random one, printed once); 12+ chars, Aa1"
    )
    add.add_argument(
        "--stage", help="a deployed stage from samconfig.toml (dev, prod); default: the local stack"
    )
    add.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")
    add.set_defaults(handler=add_command)
    role = user_commands.add_parser("role", help="change an operator's role / 利用者の役割の変更")
    role.add_argument("name", help="the operator's user name")
    role.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="; ".join(f"{r.value}: {label}" for r, label in ROLE_LABELS.items()),
    )
    role.add_argument(
        "--stage", help="a deployed stage from samconfig.toml (dev, prod); default: the local stack"
    )
    role.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")
    role.set_defaults(handler=role_command)


def role_command(args: argparse.Namespace) -> int:
    """Exit 0 changed, 1 no such operator, 2 the stack cannot be reached. One audit entry (user_role_change)
    with the role before and after."""
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as BotoClientError

    from cems.adapters.cognito import CognitoOperatorAccounts
    from cems.errors import ClientError

    new = Role(args.role)
    try:
        target = _target(args.stage, Path(args.config))
        before = CognitoOperatorAccounts(target.cognito, target.pool_id, client_id="").set_role(
            args.name, new
        )
        old = ",".join(sorted(r.value for r in before)) or "-"
        target.audit.record(
            AuditAction.USER_ROLE_CHANGE, target=args.name, detail={"from": old, "to": new.value}
        )
    except ClientError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except (BotoClientError, BotoCoreError, LookupError) as error:
        print(f"error: {type(error).__name__}: cannot change the role", file=sys.stderr)
        return 2
    print(f"{args.name}: {ROLE_LABELS[new]} / 役割を変更しました")
    return 0


def add_command(args: argparse.Namespace) -> int:
    """Exit 0 added, 1 refused (a bad name or password, a name taken), 2 the stack cannot be reached."""
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as BotoClientError

    from cems.adapters.cognito import CognitoOperatorAccounts
    from cems.errors import ClientError

    if not USERNAME.fullmatch(args.name):
        print(
            "error: 利用者名は英小文字・数字・. _ - で2〜63文字です / a user name is 2-63 lower-case "
            "letters, digits, '.', '_' or '-' (not an email address)",
            file=sys.stderr,
        )
        return 1
    password = args.password or _random_password()
    try:
        target = _target(args.stage, Path(args.config))
        CognitoOperatorAccounts(target.cognito, target.pool_id, client_id="").add(
            args.name, Role(args.role), password
        )
        target.audit_user_added(args.name, Role(args.role))
    except ClientError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except BotoClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("InvalidPasswordException", "InvalidParameterException"):
            print(f"error: {error.response['Error'].get('Message', code)}", file=sys.stderr)
            return 1
        print(f"error: {code}: cannot add the operator", file=sys.stderr)
        return 2
    except (BotoCoreError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"added {args.name} ({ROLE_LABELS[Role(args.role)]}) / 利用者を追加しました")
    if not args.password:
        # Shown once, to the administrator who hands it over; never stored by CEMS or logged.
        print(f"password: {password}")
    return 0


def _random_password() -> str:
    """16 characters meeting the pool's policy (lower, upper, digit)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(16))
        kinds = (str.islower, str.isupper, str.isdigit)
        if all(any(kind(c) for c in password) for kind in kinds):
            return password


class _Target:
    """The operators' pool and the audit log of the local stack or of a stage, and who is acting."""

    def __init__(self, cognito: Any, pool_id: str, audit: CliAudit) -> None:
        self.cognito = cognito
        self.pool_id = pool_id
        self.audit = audit

    def audit_user_added(self, name: str, role: Role) -> None:
        from cems.audit import AuditAction

        self.audit.record(AuditAction.USER_ADD, target=name, detail={"role": role.value})


@dataclass(frozen=True)
class CliAudit:
    """The audit log as the CLI writes it: under the IAM principal running it ("local" on the local
    stack, which has no IAM), with no source address (the CLI's requests reach AWS, not CEMS)."""

    log: AuditLog
    actor: str

    def record(
        self,
        action: AuditAction,
        *,
        target: str | None = None,
        detail: dict[str, str | int | bool] | None = None,
    ) -> None:
        self.log.record(
            actor=withheld_if_personal(self.actor),
            action=action,
            source_ip=None,
            target=target,
            detail=detail,
        )


def _local_clients() -> dict[str, Any]:
    return {
        "endpoint_url": f"http://127.0.0.1:{os.environ.get('CEMS_AWS_PORT', '4566')}",
        "region_name": os.environ.get("CEMS_REGION", "ap-northeast-1"),
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "config": CLIENT_CONFIG,
    }


def _stage_outputs(stage: str, config: Path) -> tuple[dict[str, str], str]:
    import boto3

    from cems.stages import stage_stack

    stack_name, region = stage_stack(stage, config)
    stacks = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)
    return {o["OutputKey"]: o["OutputValue"] for o in stacks["Stacks"][0].get("Outputs", [])}, region


def cli_audit(stage: str | None, config: Path) -> CliAudit:
    """The audit log of the local stack or of `stage`, written as the caller."""
    import boto3

    from cems.adapters.dynamodb.audit import DynamoAuditStore

    if stage is None:
        dynamodb = boto3.client("dynamodb", **_local_clients())
        return CliAudit(AuditLog(DynamoAuditStore("AuditTable", dynamodb)), "local")
    outputs, region = _stage_outputs(stage, config)
    caller = boto3.client("sts", region_name=region).get_caller_identity()["Arn"]
    dynamodb = boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG)
    return CliAudit(AuditLog(DynamoAuditStore(outputs["AuditTableName"], dynamodb)), caller)


def _target(stage: str | None, config: Path) -> _Target:
    import boto3

    if stage is None:
        cognito = boto3.client("cognito-idp", **_local_clients())
        pools = [
            p["Id"]
            for p in cognito.list_user_pools(MaxResults=60)["UserPools"]
            if p["Name"].endswith(LOCAL_POOL_SUFFIX)
        ]
        if len(pools) != 1:
            raise LookupError("the local stack's operator pool was not found: is `make run` running?")
        return _Target(cognito, pools[0], cli_audit(None, config))
    outputs, region = _stage_outputs(stage, config)
    cognito = boto3.client("cognito-idp", region_name=region, config=CLIENT_CONFIG)
    return _Target(cognito, outputs["OperatorPoolId"], cli_audit(stage, config))
