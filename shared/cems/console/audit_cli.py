"""`cems audit`: the operators' audit log from the command line, read straight from AuditTable.

Against the local stack (the default, or `--local`) it reads the moto server at
127.0.0.1:$CEMS_AWS_PORT (4566 by default), where the stack created AuditTable from template.yaml;
against a deployed stage (`--stage`) the table is the stack's AuditTableName output, read with the
caller's AWS credentials (which need dynamodb:Query on it, nothing more). Entries come newest first,
one line each (time in JST, actor, role, action, target, source IP, outcome), or as JSON Lines.
Times given without an offset are Japan time, as operators read them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cems.audit import MAX_PAGE, AuditAction, AuditEntry, AuditLog
from cems.stages import DEFAULT_REGION, stage_stack

if TYPE_CHECKING:
    from cems.audit import AuditStore

JST = timezone(timedelta(hours=9), "JST")
DEFAULT_DAYS = 7


def register(commands: Any) -> None:
    """Adds `audit` to the `cems` sub-commands; it sets `handler`."""
    audit = commands.add_parser(
        "audit",
        help="the operators' audit log, newest first / 操作ログ（監査ログ）を新しい順に表示",
        description="操作ログ（監査ログ）を新しい順に表示します。"
        " Lists the operators' audit log, newest first. Times without an offset are JST.",
    )
    audit.add_argument(
        "--since",
        help=f"from this time or date, ISO 8601, JST unless it says otherwise "
        f"(default: {DEFAULT_DAYS} days before --until) / 開始日時",
    )
    audit.add_argument("--until", help="up to (not including) this time or date (default: now) / 終了日時")
    audit.add_argument("--actor", help="only this operator (user name or IAM principal ARN) / 操作者")
    audit.add_argument(
        "--action", choices=[a.value for a in AuditAction], help="only this action / 操作の種類"
    )
    audit.add_argument(
        "--limit", type=int, default=200, help="at most this many entries (default 200) / 最大件数"
    )
    audit.add_argument("--json", action="store_true", help="one JSON object per entry / JSON Lines で出力")
    where = audit.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="the local stack (the default) / ローカル環境")
    where.add_argument("--stage", help="a deployed stage from samconfig.toml (dev, prod) / デプロイ先")
    audit.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")
    audit.set_defaults(handler=audit_command)


def audit_command(args: argparse.Namespace, store: AuditStore | None = None) -> int:
    """Prints the entries; exit 2 for a bad option or when the table cannot be read."""
    from cems.ports import ServiceUnavailable

    try:
        until = parse_time(args.until) if args.until else datetime.now(UTC)
        since = parse_time(args.since) if args.since else until - timedelta(days=DEFAULT_DAYS)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if since >= until:
        print(
            "error: --since must be before --until / 開始日時は終了日時より前にしてください", file=sys.stderr
        )
        return 2
    if args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    log = AuditLog(store or _store(args.stage, Path(args.config)))
    action = AuditAction(args.action) if args.action else None
    shown = 0
    cursor: str | None = None
    try:
        while shown < args.limit:
            page = log.entries(
                since,
                until,
                actor=args.actor,
                action=action,
                limit=min(MAX_PAGE, args.limit - shown),
                cursor=cursor,
            )
            for entry in page.entries:
                print(entry.model_dump_json() if args.json else entry_line(entry))
            shown += len(page.entries)
            cursor = page.cursor
            if cursor is None:
                break
    except ServiceUnavailable as exc:
        where = f"stage {args.stage}" if args.stage else "the local stack (is `cems local` running?)"
        print(f"error: cannot read the audit log of {where}: {exc}", file=sys.stderr)
        return 2
    if cursor is not None:
        print(
            f"(more than {args.limit} entries: narrow --since/--until or raise --limit / 続きがあります)",
            file=sys.stderr,
        )
    elif shown == 0:
        print("no entries / 該当する記録はありません", file=sys.stderr)
    return 0


def parse_time(text: str) -> datetime:
    """An ISO 8601 time or date; without an offset it is Japan time (a date: its midnight in JST)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), JST)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or date: {text!r} (e.g. 2026-05-01T09:00)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=JST)


def entry_line(entry: AuditEntry) -> str:
    """One entry: time (JST), actor, role, action, target, source IP, outcome, then any detail."""
    cells = [
        entry.at.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST"),
        entry.actor,
        entry.role.value if entry.role else "-",
        entry.action.value,
        entry.target or "-",
        entry.source_ip,
        entry.outcome.value,
    ]
    if entry.detail:
        cells.append(json.dumps(entry.detail, ensure_ascii=False, sort_keys=True))
    return "  ".join(cells)


def _store(stage: str | None, config: Path) -> AuditStore:
    """AuditTable of the local stack (named after its logical id there), or of a deployed stage."""
    import boto3
    from botocore.config import Config

    from cems.adapters.aws import CLIENT_CONFIG
    from cems.adapters.dynamodb.audit import DynamoAuditStore
    from cems.settings import Settings

    if stage is None:
        client = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{os.environ.get('CEMS_AWS_PORT', '4566')}",
            region_name=DEFAULT_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
            # One retry at most: a stack that is not running should be said at once.
            config=CLIENT_CONFIG.merge(Config(retries={"max_attempts": 2, "mode": "standard"})),
        )
        return DynamoAuditStore(Settings({}).tables.audit, client)
    stack_name, region = stage_stack(stage, config)
    stack = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0].get("Outputs", [])}
    if "AuditTableName" not in outputs:
        raise SystemExit(f"error: stack {stack_name} has no AuditTableName output (deploy it first)")
    client = boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG)
    return DynamoAuditStore(outputs["AuditTableName"], client)
