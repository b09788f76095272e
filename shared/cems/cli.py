"""The `cems` command: run the local stack and administer sites, locally or on a deployed stage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from cems.aws import CLIENT_CONFIG

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LOCAL_REGION = "ap-northeast-1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cems", description="CEMS command line / CEMS コマンド")
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run the whole system on this machine (moto as AWS)")
    local.add_argument("rest", nargs=argparse.REMAINDER, help="options for the local stack")

    site = commands.add_parser("site", help="add, rotate or list sites (write keys)")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    add = site_commands.add_parser("add", help="add a site, or rotate its write key with --rotate")
    add.add_argument("name", help="the site's name, e.g. shop-main")
    add.add_argument("--origin", action="append", default=[], help="an allowed browser origin (repeatable)")
    add.add_argument("--write-key", help="use this write key instead of a generated one")
    add.add_argument("--rotate", action="store_true", help="issue a new write key for an existing site")
    add.add_argument(
        "--grace-hours", type=float, default=24.0, help="with --rotate: hours the old key keeps working"
    )
    _target_options(add)
    listing = site_commands.add_parser("list", help="list sites")
    _target_options(listing)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["local"]:
        # argparse's REMAINDER refuses options right after the sub-command; the stack parses its own.
        from cems.local.stack import main as local_main

        return local_main(argv[1:])
    args = parser.parse_args(argv)
    return _site_command(args)


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage", help="a deployed stage from samconfig.toml (dev, prod); default: the local stack"
    )
    parser.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")


def _site_command(args: argparse.Namespace) -> int:
    from cems.sites import SiteStore

    client, table = _sites_table(args.stage, Path(args.config))
    store = SiteStore(table, client)
    if args.site_command == "list":
        sites = store.sites_named_all()
        for s in sites:
            print(json.dumps(s.model_dump(mode="json"), ensure_ascii=False))
        return 0
    if args.rotate:
        try:
            new, retiring = store.rotate(args.name, timedelta(hours=args.grace_hours), args.origin or None)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            json.dumps(
                {
                    "site": new.model_dump(mode="json"),
                    "retiring": [r.model_dump(mode="json") for r in retiring],
                },
                ensure_ascii=False,
            )
        )
        return 0
    if not args.origin:
        print(
            "error: give at least one --origin (e.g. https://shop.example.jp), or --origin '*'",
            file=sys.stderr,
        )
        return 2
    site = store.add(args.name, args.origin, args.write_key)
    print(json.dumps(site.model_dump(mode="json"), ensure_ascii=False))
    return 0


def _sites_table(stage: str | None, config: Path) -> tuple[DynamoDBClient, str]:
    """The Sites table of the local stack, or of a deployed stage (found from its stack outputs)."""
    if stage is None:
        port = os.environ.get("CEMS_AWS_PORT", "4566")
        client = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name=LOCAL_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
            config=CLIENT_CONFIG,
        )
        return client, "SitesTable"
    stack_name, region = stage_stack(stage, config)
    outputs = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)[
        "Stacks"
    ][0]
    table = next(o["OutputValue"] for o in outputs.get("Outputs", []) if o["OutputKey"] == "SitesTableName")
    return boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG), table


def stage_stack(stage: str, config: Path) -> tuple[str, str]:
    """(stack name, region) of a stage in samconfig.toml."""
    with config.open("rb") as f:
        samconfig = tomllib.load(f)
    try:
        parameters = samconfig[stage]["deploy"]["parameters"]
    except KeyError:
        raise SystemExit(f"error: stage {stage!r} has no deploy parameters in {config}") from None
    return parameters["stack_name"], parameters.get("region", LOCAL_REGION)


if __name__ == "__main__":
    raise SystemExit(main())
