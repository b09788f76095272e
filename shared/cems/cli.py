"""The `cems` command: run the local stack and administer sites, locally or on a deployed stage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from cems.adapters.aws import CLIENT_CONFIG
from cems.stages import DEFAULT_REGION, stage_stack

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from cems.models import Profile
    from cems.scenario.validation import ValidationReport

LOCAL_REGION = DEFAULT_REGION


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
        "--rotate-secrets",
        action="store_true",
        help="issue a new secret server key and identity secret for an existing site",
    )
    add.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="with --rotate/--rotate-secrets: hours the old key (or identity secret) keeps working",
    )
    _target_options(add)
    listing = site_commands.add_parser("list", help="list sites")
    _target_options(listing)

    line = commands.add_parser("line", help="play the LINE side against the local stack")
    line_commands = line.add_subparsers(dest="line_command", required=True)
    webhook = line_commands.add_parser(
        "webhook", help="sign a webhook body (e.g. events/line_webhook/follow.json) and post it"
    )
    webhook.add_argument("file", type=Path, help="a LINE webhook body: {destination, events: [...]}")
    webhook.add_argument(
        "--url", help="where to post (default: http://127.0.0.1:$CEMS_HTTP_PORT/line/webhook, port 3000)"
    )
    webhook.add_argument("--user", help="send every event as this LINE user id (source.userId)")
    webhook.add_argument(
        "--fresh",
        action="store_true",
        help="new webhookEventIds and timestamps, so a sample already sent counts as a new event",
    )
    webhook.add_argument(
        "--nonce", help="for accountLink events: the nonce (from /v1/line/link's redirectUrl)"
    )

    scenario = commands.add_parser("scenario", help="check scenario files / シナリオファイルの検証")
    scenario_commands = scenario.add_subparsers(dest="scenario_command", required=True)
    validate = scenario_commands.add_parser(
        "validate", help="check a scenario file; exit 0 if valid, 1 with a report of every mistake"
    )
    validate.add_argument(
        "file", type=Path, help="a scenario JSON file, e.g. examples/scenarios/line_welcome.json"
    )
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    scenario_commands.add_parser("schema", help="print the JSON Schema of scenario files")
    simulate = scenario_commands.add_parser(
        "simulate",
        help="play one customer's events through a scenario and print the timeline (sends nothing)",
    )
    simulate.add_argument("file", type=Path, help="a scenario JSON file")
    simulate.add_argument(
        "--events", type=Path, required=True, help="a JSON list of the customer's events (with timestamps)"
    )
    simulate.add_argument(
        "--profile", type=Path, help="a JSON object of profile fields (traits, channels, ...)"
    )
    upload = scenario_commands.add_parser(
        "upload",
        help="check a scenario file, upload it as scenarios/<id>.json and print the loader's report",
    )
    upload.add_argument("file", type=Path, help="a scenario JSON file")
    upload.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the report (default 10; 0: do not wait)"
    )
    _target_options(upload)
    test_send = scenario_commands.add_parser(
        "test-send",
        help="render one send step and send it ONLY to you, marked as a test and never counted "
        "/ テスト送信（自分だけに送信、レポートに数えない）",
    )
    test_send.add_argument("file", type=Path, help="a scenario JSON file")
    test_send.add_argument("--step", required=True, help="the id of a send step in the file")
    test_send.add_argument(
        "--to", required=True, help="line:<your LINE user id (U + 32 hex)> or email:<your address>"
    )
    test_profile = test_send.add_mutually_exclusive_group()
    test_profile.add_argument(
        "--profile", metavar="CUSTOMER_ID", help="render with this customer's stored profile"
    )
    test_profile.add_argument(
        "--profile-file", type=Path, help="render with a JSON object of profile fields (traits, ...)"
    )
    test_send.add_argument(
        "--event-file", type=Path, help="the trigger event templates see as `event` (JSON, with a timestamp)"
    )
    _target_options(test_send)
    from cems.console.diagram_cli import register as register_diagram

    register_diagram(scenario_commands)  # `scenario diagram`: sets `handler`
    from cems.reports.cli import register as register_reports

    register_reports(commands)  # `report`, `customer erase`: each sets `handler`
    from cems.console.audit_cli import register as register_audit

    register_audit(commands)  # `audit`: the operators' audit log
    from cems.console.user_cli import register as register_users

    register_users(commands)  # `user add`
    from cems.console.audience_cli import register as register_audience

    register_audience(commands)  # `audience count`

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["local"]:
        # argparse's REMAINDER refuses options right after the sub-command; the stack parses its own.
        from cems.local.stack import main as local_main

        return local_main(argv[1:])
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args))
    if args.command == "line":
        return _line_webhook_command(args)
    if args.command == "scenario":
        return _scenario_command(args)
    return _site_command(args)


def _scenario_command(args: argparse.Namespace) -> int:
    """`validate`: the report (text or --json) on stdout, exit 0 valid / 1 invalid. `schema`: the
    JSON Schema that schemas/scenario.schema.json holds."""
    if args.scenario_command == "schema":
        from cems.scenario.model import json_schema_text

        sys.stdout.write(json_schema_text())
        return 0
    from cems.scenario.validation import validate_file

    report = validate_file(args.file)
    if args.scenario_command == "simulate":
        return _simulate_command(args, report)
    if args.scenario_command == "upload":
        return _upload_command(args, report)
    if args.scenario_command == "test-send":
        return _test_send_command(args, report)
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.valid else 1


def _simulate_command(args: argparse.Namespace, report: ValidationReport) -> int:
    """The timeline of one customer (times in the scenario's zone); exit 1 for an invalid scenario,
    2 for unreadable events or profile."""
    from cems.scenario.config import EngineSettings
    from cems.scenario.model import FrequencyCaps
    from cems.scenario.simulate import simulate_files
    from cems.settings import Settings

    if report.scenario is None or not report.valid:
        print(report.to_text())
        return 1
    try:
        events = args.events.read_text(encoding="utf-8")
        profile = args.profile.read_text(encoding="utf-8") if args.profile else None
        # The deployment's caps and quiet hours from the environment, as trigger and tick read them,
        # so the timeline keeps the rules production keeps (a bad value: exit 2, naming the variable).
        engine = Settings.from_environ().area(EngineSettings)
        caps = FrequencyCaps.model_validate(engine.caps())
        simulation = simulate_files(report.scenario, events, profile, caps=caps, quiet_hours=engine.quiet())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(simulation.lines()))
    return 0


def _upload_command(args: argparse.Namespace, report: ValidationReport) -> int:
    """Validates locally first (an invalid file is never uploaded: exit 1), puts the file at
    scenarios/<id>.json in the local stack's or the stage's ScenarioBucket, then waits for the
    loader's report on that very upload (matched by etag) and prints it: exit 0 when it is live,
    1 when the loader refused it, 2 when the upload failed. No report in time: exit 0 with a note."""
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as BotoClientError

    print(report.to_text())
    if report.scenario is None or not report.valid:
        return 1
    key = f"scenarios/{report.scenario.id}.json"
    try:
        client, bucket = _scenario_bucket(args.stage, Path(args.config))
        answer = client.put_object(
            Bucket=bucket,
            Key=key,
            Body=args.file.read_bytes(),
            ContentType="application/json; charset=utf-8",
        )
    except (OSError, BotoCoreError, BotoClientError) as exc:
        where = f"stage {args.stage}" if args.stage else "the local stack (is `cems local` running?)"
        print(f"error: cannot upload to {where}: {exc}", file=sys.stderr)
        return 2
    etag = answer["ETag"].strip('"')
    print(f"uploaded to s3://{bucket}/{key}")
    name = report.scenario.id
    deadline = time.monotonic() + max(0.0, args.wait)
    while time.monotonic() < deadline:
        loaded = _read_report(client, bucket, name)
        if loaded is not None and loaded[0].get("etag") == etag:
            print(loaded[1].rstrip("\n"))
            return 0 if loaded[0].get("state") == "active" else 1
        time.sleep(0.5)
    if args.wait > 0:
        print(
            f"note: no report yet after {args.wait:g} s; it will be at s3://{bucket}/reports/{name}.txt",
            file=sys.stderr,
        )
    return 0


def _test_send_command(args: argparse.Namespace, report: ValidationReport) -> int:
    """Renders one send step (sample profile, --profile from CustomersTable, or --profile-file) and
    enqueues it as a test dispatch for the --to recipient only, on the local stack's or the stage's
    send queue of that channel. Exit 1 for an invalid scenario, 2 for anything else that stops
    it. Prints the step, channel, key and a short preview; never the recipient or the full content."""
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as BotoClientError

    from cems.audit import AuditAction
    from cems.channels.registry import plugin
    from cems.console.user_cli import cli_audit
    from cems.scenario import test_send

    if report.scenario is None or not report.valid:
        print(report.to_text())
        return 1
    where = f"stage {args.stage}" if args.stage else "the local stack (is `cems local` running?)"
    try:
        recipient = test_send.parse_recipient(args.to)
        profile = None
        if args.profile_file is not None:
            profile = test_send.profile_from_json(json.loads(args.profile_file.read_text(encoding="utf-8")))
        elif args.profile is not None:
            profile = _test_send_profile(args.stage, Path(args.config), args.profile)
        event = None
        if args.event_file is not None:
            customer_id = profile.customer_id if profile is not None else test_send.TEST_CUSTOMER
            raw = json.loads(args.event_file.read_text(encoding="utf-8"))
            event = test_send.event_from_json(raw, customer_id)
        send = test_send.build_test_send(report.scenario, args.step, recipient, profile, event)
        sqs, queue_url = _test_send_queue(args.stage, Path(args.config), send.channel)
        # Recorded first, so a test send that could not be recorded is not sent. The entry names
        # the scenario, step and channel; never the recipient.
        cli_audit(args.stage, Path(args.config)).record(
            AuditAction.TEST_SEND,
            target=report.scenario.id,
            detail={"step": args.step, "channel": str(send.channel)},
        )
        sqs.send_message(QueueUrl=queue_url, MessageBody=send.body())
    except (OSError, ValueError, LookupError) as exc:
        print(f"error: {exc}\nテスト送信は登録されていません / nothing was queued", file=sys.stderr)
        return 2
    except (BotoCoreError, BotoClientError) as exc:
        print(f"error: cannot reach {where}: {type(exc).__name__}", file=sys.stderr)
        print("テスト送信は登録されていません / nothing was queued", file=sys.stderr)
        return 2
    queue = plugin(send.channel).queue_resource
    print(f"テスト送信を {queue} に登録しました / test send queued on {queue}")
    for name, value in test_send.describe(send).items():
        print(f"  {name + ':':<9}{value}")
    print("  テスト送信はレポートに数えられません / a test send is never counted in reports")
    return 0


def _test_send_profile(stage: str | None, config: Path, customer_id: str) -> Profile:
    """The customer's stored profile (CustomersTable of the local stack, or of the stage)."""
    from cems.adapters.dynamodb.customers import CustomerStore

    if stage is None:
        client, table = _local_client("dynamodb", CLIENT_CONFIG), "CustomersTable"
    else:
        outputs, region = _test_send_outputs(stage, config, "CustomersTableName")
        client = boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG)
        table = outputs["CustomersTableName"]
    profile = CustomerStore(table, client).profile(customer_id)
    if profile is None:
        raise LookupError(f"no customer {customer_id} / 顧客 {customer_id} は見つかりません")
    return profile


def _test_send_queue(stage: str | None, config: Path, channel: str) -> tuple[Any, str]:
    """The channel's send queue (its plugin names the template resource, LineSendQueue, ...): by name
    on the local stack, from the stage's `<resource>Url` output."""
    from cems.channels.registry import plugin

    name = plugin(channel).queue_resource
    if stage is None:
        sqs = _local_client("sqs", CLIENT_CONFIG)
        return sqs, sqs.get_queue_url(QueueName=name)["QueueUrl"]
    output = f"{name}Url"
    outputs, region = _test_send_outputs(stage, config, output)
    return boto3.client("sqs", region_name=region, config=CLIENT_CONFIG), outputs[output]


def _test_send_outputs(stage: str, config: Path, needed: str) -> tuple[dict[str, str], str]:
    """The stage's stack outputs (and region); exits with a hint when `needed` is not among them."""
    stack_name, region = stage_stack(stage, config)
    stack = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)[
        "Stacks"
    ][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if needed not in outputs:
        raise SystemExit(f"error: stack {stack_name} has no {needed} output (deploy it first)")
    return outputs, region


def _read_report(client: Any, bucket: str, name: str) -> tuple[dict[str, Any], str] | None:
    """The loader's report on a scenario (JSON and plain text), or None if there is none yet."""
    from botocore.exceptions import ClientError as BotoClientError

    try:
        data = json.loads(client.get_object(Bucket=bucket, Key=f"reports/{name}.json")["Body"].read())
        text = client.get_object(Bucket=bucket, Key=f"reports/{name}.txt")["Body"].read().decode("utf-8")
    except (BotoClientError, ValueError):
        return None
    return (data, text) if isinstance(data, dict) else None


def _scenario_bucket(stage: str | None, config: Path) -> tuple[Any, str]:
    """ScenarioBucket of the local stack (moto at 127.0.0.1:$CEMS_AWS_PORT, named as the local stack
    names buckets), or of a deployed stage (its ScenarioBucketName output)."""

    s3_config = CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"}))
    if stage is None:
        from cems.local.resources import bucket_name

        return _local_client("s3", s3_config), bucket_name("ScenarioBucket")
    stack_name, region = stage_stack(stage, config)
    stack = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)[
        "Stacks"
    ][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if "ScenarioBucketName" not in outputs:
        raise SystemExit(f"error: stack {stack_name} has no ScenarioBucketName output (deploy it first)")
    return boto3.client("s3", region_name=region, config=s3_config), outputs["ScenarioBucketName"]


def _line_webhook_command(args: argparse.Namespace) -> int:
    """Signs the body with CEMS_LINE_CHANNEL_SECRET (else the local default) and posts it as LINE
    would; prints the answer's status and body."""
    import urllib.error
    import urllib.request

    from cems.line.config import LOCAL_CHANNEL_SECRET
    from cems.line.webhook import sign

    try:
        document = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        print(f"error: {args.file} is not a LINE webhook body ({{destination, events}})", file=sys.stderr)
        return 2
    _adjust_events(document["events"], args.user, args.nonce, args.fresh)
    body = json.dumps(document, ensure_ascii=False).encode("utf-8")
    secret = os.environ.get("CEMS_LINE_CHANNEL_SECRET") or LOCAL_CHANNEL_SECRET
    url = args.url or f"http://127.0.0.1:{os.environ.get('CEMS_HTTP_PORT', '3000')}/line/webhook"
    request = urllib.request.Request(  # noqa: S310 - a URL the operator chose
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "X-Line-Signature": sign(body, secret)},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            status, text = answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        print(f"error: cannot reach {url}: {exc} (is `cems local` running?)", file=sys.stderr)
        return 1
    print(f"{status} {text}")
    return 0 if status == 200 else 1


def _adjust_events(events: list[Any], user: str | None, nonce: str | None, fresh: bool) -> None:
    from cems.local.fake_line_login import webhook_event_id

    now_ms = int(time.time() * 1000)
    for event in events:
        if not isinstance(event, dict):
            continue
        if user:
            source = event.setdefault("source", {"type": "user"})
            if isinstance(source, dict):
                source["userId"] = user
        if nonce and isinstance(event.get("link"), dict):
            event["link"]["nonce"] = nonce
        if fresh:
            event["webhookEventId"] = webhook_event_id()
            event["timestamp"] = now_ms


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage", help="a deployed stage from samconfig.toml (dev, prod); default: the local stack"
    )
    parser.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")


# Listing sites never prints their identity secrets (they are shown once, when made).
SECRET_FIELDS = {"identity_secret", "previous_identity_secret"}


def _site_command(args: argparse.Namespace) -> int:
    from cems.adapters.dynamodb.sites import SiteStore
    from cems.sites import MAX_KEY_LENGTH

    client, table = _sites_table(args.stage, Path(args.config))
    store = SiteStore(table, client)
    if args.site_command == "list":
        sites = store.sites_named_all()
        for s in sites:
            print(json.dumps(s.model_dump(mode="json", exclude=SECRET_FIELDS), ensure_ascii=False))
        return 0
    if args.rotate_secrets:
        try:
            credentials = store.rotate_secrets(args.name, timedelta(hours=args.grace_hours))
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(credentials.shown(), ensure_ascii=False))
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
                    "site": new.model_dump(mode="json", exclude=SECRET_FIELDS),
                    "retiring": [r.model_dump(mode="json", exclude=SECRET_FIELDS) for r in retiring],
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
    if args.write_key and len(args.write_key) > MAX_KEY_LENGTH:
        print(f"error: a write key may be at most {MAX_KEY_LENGTH} characters", file=sys.stderr)
        return 2
    # The secret key and identity secret are printed once, for a new site: only the key's hash is kept.
    print(json.dumps(store.add(args.name, args.origin, args.write_key).shown(), ensure_ascii=False))
    return 0


def _local_client(service: str, config: Config) -> Any:
    """A client for the local stack's moto server (127.0.0.1:$CEMS_AWS_PORT, any credentials). One
    retry at most: a stack that is not running should be said at once, not after backoffs."""
    config = config.merge(Config(retries={"max_attempts": 2, "mode": "standard"}))
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=f"http://127.0.0.1:{os.environ.get('CEMS_AWS_PORT', '4566')}",
        region_name=LOCAL_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
        config=config,
    )


def _sites_table(stage: str | None, config: Path) -> tuple[DynamoDBClient, str]:
    """The Sites table of the local stack, or of a deployed stage (found from its stack outputs)."""
    if stage is None:
        return _local_client("dynamodb", CLIENT_CONFIG), "SitesTable"
    stack_name, region = stage_stack(stage, config)
    outputs = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)[
        "Stacks"
    ][0]
    table = next(o["OutputValue"] for o in outputs.get("Outputs", []) if o["OutputKey"] == "SitesTableName")
    return boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG), table


if __name__ == "__main__":
    raise SystemExit(main())
