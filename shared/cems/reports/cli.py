"""`cems report` and `cems customer find|export|erase`: the admin API from the command line.

Against the local stack they call its HTTP port (http://127.0.0.1:$CEMS_HTTP_PORT, 3000 by default;
the local router does not check IAM). Against a deployed stage (`--stage`) the API URL comes from
the stack's outputs and every request is signed with SigV4 (service `execute-api`) using the
caller's AWS credentials, as the routes' IAM authoriser requires. `--url` names another base URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cems.stages import stage_stack

if TYPE_CHECKING:
    from cems.reports.report import Lift, ScenarioReport


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass(frozen=True)
class AdminTarget:
    """Where the admin API is, and the region to sign for (None: do not sign)."""

    base_url: str
    sign_region: str | None = None


Send = Callable[[str, str, dict[str, str]], Answer]


def register(commands: Any) -> None:
    """Adds `report` and `customer` to the `cems` sub-commands; each sets `handler`."""
    report = commands.add_parser(
        "report", help="a scenario's effect report: funnel, conversion, lift / シナリオの効果測定"
    )
    report.add_argument("scenario_id", help="the scenario's id, e.g. post-purchase-tea")
    report.add_argument("--version", type=int, help="one version only (default: every version together)")
    report.add_argument("--html", type=Path, help="also write a self-contained HTML report to this file")
    report.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    _target_options(report)
    report.set_defaults(handler=report_command)

    customer = commands.add_parser("customer", help="customer data / 顧客データ")
    customer_commands = customer.add_subparsers(dest="customer_command", required=True)
    erase = customer_commands.add_parser(
        "erase", help="erase a customer: profile, identities, events, enrolments / 顧客データの削除"
    )
    erase.add_argument("customer_id", help="the customer id (cus_...); merged ids erase the whole person")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _target_options(erase)
    erase.set_defaults(handler=erase_command)

    find = customer_commands.add_parser(
        "find", help="顧客の検索（マスク表示） / find customers by one contact point or id, shown masked"
    )
    by = find.add_mutually_exclusive_group(required=True)
    for option, query, text in FIND_OPTIONS:
        by.add_argument(option, dest=query, metavar="VALUE", help=text)
    find.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    _target_options(find)
    find.set_defaults(handler=find_command)

    export = customer_commands.add_parser(
        "export",
        help="開示請求用の全データ出力 / everything CEMS holds about a customer, as JSON",
    )
    export.add_argument("customer_id", help="the customer id (cus_...); merged ids export the whole person")
    export.add_argument("--out", type=Path, help="write the JSON to this file (created readable by you only)")
    _target_options(export)
    export.set_defaults(handler=export_command)
    reindex = customer_commands.add_parser(
        "reindex",
        help="give profiles written before lookups existed their email/phone lookup items (a Scan) "
        "/ 検索用キーの作成（既存の顧客）",
    )
    reindex.add_argument("--segments", type=int, default=4, help="parallel Scan segments (default 4)")
    reindex.add_argument("--stage", help="a deployed stage from samconfig.toml; default: the local stack")
    reindex.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")
    reindex.set_defaults(handler=reindex_command)


# `cems customer find` options: (option, the admin API's query parameter, help).
FIND_OPTIONS = (
    ("--email", "email", "メールアドレス / an email address"),
    ("--phone", "phone", "電話番号 / a phone number, any spelling (090-..., +81 90...)"),
    ("--line-user-id", "line_user_id", "LINE ユーザー ID / a LINE user id (U...)"),
    ("--user-id", "user_id", "ショップの会員 ID / the shop's user id"),
    ("--anonymous-id", "anonymous_id", "匿名 ID / an anonymous id (a browser)"),
)


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage", help="a deployed stage from samconfig.toml (dev, prod); default: the local stack"
    )
    parser.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")
    parser.add_argument(
        "--url", help="the API's base URL (default: local http://127.0.0.1:$CEMS_HTTP_PORT, or the stage's)"
    )


# -- commands ----------------------------------------------------------------------------------------


def report_command(args: argparse.Namespace, send: Send | None = None) -> int:
    """Prints the report (table or --json) and writes --html; exit 1 for an unknown scenario or a
    refused request, 2 when the API cannot be reached."""
    from pydantic import ValidationError

    from cems.reports.html import render_html
    from cems.reports.report import ScenarioReport

    query = {"version": str(args.version)} if args.version is not None else {}
    path = f"/admin/scenarios/{urllib.parse.quote(args.scenario_id, safe='')}/report"
    answer = _call(args, "GET", path, query, send)
    if answer is None:
        return 2
    if answer.status != 200:
        return _refused(answer)
    try:
        report = ScenarioReport.model_validate(answer.json())
    except (ValueError, ValidationError) as exc:
        print(f"error: the API answered something that is not a report: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render_text(report))
    if args.html:
        try:
            args.html.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.html}: {exc}", file=sys.stderr)
            return 2
        print(f"HTML report written to {args.html}", file=sys.stderr)
    return 0


def erase_command(
    args: argparse.Namespace, send: Send | None = None, ask: Callable[[str], str] | None = None
) -> int:
    """Erases after a yes (unless --yes, or stdin is not a terminal); exit 1 for an unknown
    customer, a refused request or a no, 2 when the API cannot be reached."""
    if not args.yes and sys.stdin.isatty():
        prompt = (
            f"顧客 {args.customer_id} のプロフィール・ID・イベント・シナリオ参加をすべて削除します。"
            "元に戻せません。\n"
            f"Erase customer {args.customer_id}: profile, identities, events and enrolments? "
            "This cannot be undone. [y/N] "
        )
        if (ask or input)(prompt).strip().lower() not in ("y", "yes"):
            print("not erased / 削除しませんでした", file=sys.stderr)
            return 1
    path = f"/admin/customers/{urllib.parse.quote(args.customer_id, safe='')}"
    answer = _call(args, "DELETE", path, {}, send)
    if answer is None:
        return 2
    if answer.status != 200:
        return _refused(answer)
    document = answer.json()
    erased = document.get("erased", {})
    ids = ", ".join(document.get("customer_ids", [args.customer_id]))
    print(f"erased / 削除しました: {ids}")
    print("  " + ", ".join(f"{name} {count}" for name, count in erased.items()))
    return 0


def find_command(args: argparse.Namespace, send: Send | None = None) -> int:
    """Prints each customer found (id and masked profile); exit 1 when none is found or the request
    is refused, 2 when the API cannot be reached."""
    query = {
        name: getattr(args, name) for _, name, _ in FIND_OPTIONS if getattr(args, name, None) is not None
    }
    answer = _call(args, "GET", "/admin/customers", query, send)
    if answer is None:
        return 2
    if answer.status != 200:
        return _refused(answer)
    document = answer.json()
    customers = document.get("customers", [])
    if args.json:
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        print(f"見つかった顧客 Customers found: {len(customers)} (マスク表示 masked)")
        for customer in customers:
            print(f"\n{customer['customer_id']}")
            print(json.dumps(customer.get("profile", {}), ensure_ascii=False, indent=2))
    if not customers:
        print("該当する顧客はいません / no customer found", file=sys.stderr)
        return 1
    return 0


def export_command(args: argparse.Namespace, send: Send | None = None) -> int:
    """Writes the person's export (JSON) to --out, else to stdout; exit 1 for an unknown customer or a
    refused request, 2 when the API cannot be reached or the file cannot be written."""
    path = f"/admin/customers/{urllib.parse.quote(args.customer_id, safe='')}/export"
    answer = _call(args, "GET", path, {}, send)
    if answer is None:
        return 2
    if answer.status != 200:
        return _refused(answer)
    text = json.dumps(answer.json(), ensure_ascii=False, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        # Personal data: the file is created readable by its owner only.
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"出力しました / exported: {args.customer_id} -> {args.out}", file=sys.stderr)
    return 0


def _refused(answer: Answer) -> int:
    try:
        document = answer.json()
        message = f"{document.get('error', '')}: {document.get('message', '')}"
    except ValueError:
        message = answer.body.decode("utf-8", "replace")[:500]
    print(f"error: {answer.status} {message}", file=sys.stderr)
    return 1


# -- transport ----------------------------------------------------------------------------------------


def _call(
    args: argparse.Namespace, method: str, path: str, query: dict[str, str], send: Send | None
) -> Answer | None:
    target = admin_target(args.stage, Path(args.config), args.url)
    url = target.base_url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Accept": "application/json"}
    if target.sign_region is not None:
        headers = sign(method, url, headers, target.sign_region)
    try:
        return (send or http_send)(method, url, headers)
    except OSError as exc:
        where = f"stage {args.stage}" if args.stage else "the local stack (is `cems local` running?)"
        print(f"error: cannot reach {where} at {url}: {exc}", file=sys.stderr)
        return None


def admin_target(stage: str | None, config: Path, url: str | None) -> AdminTarget:
    """The API's base URL: --url, else the stage's ApiUrl output (signed), else the local stack."""
    if stage is None:
        return AdminTarget(url or f"http://127.0.0.1:{os.environ.get('CEMS_HTTP_PORT', '3000')}")
    stack_name, region = stage_stack(stage, config)
    if url:
        return AdminTarget(url, region)
    outputs = stack_outputs(stack_name, region)
    if "ApiUrl" in outputs:
        return AdminTarget(outputs["ApiUrl"], region)
    if "AdminApiUrl" in outputs:
        return AdminTarget(outputs["AdminApiUrl"].rstrip("/").removesuffix("/admin"), region)
    raise SystemExit(f"error: stack {stack_name} has no ApiUrl output (deploy it first)")


def stack_outputs(stack_name: str, region: str) -> dict[str, str]:
    import boto3

    stack = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0].get("Outputs", [])}


def sign(
    method: str, url: str, headers: dict[str, str], region: str, credentials: Any = None
) -> dict[str, str]:
    """The headers with a SigV4 signature for API Gateway's IAM authoriser (service execute-api),
    from the caller's AWS credentials (environment, profile, SSO: boto3's usual chain)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    if credentials is None:
        found = boto3.Session().get_credentials()
        if found is None:
            raise SystemExit("error: no AWS credentials to sign the request with (aws configure / sso login)")
        credentials = found.get_frozen_credentials()
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=b"")
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


def http_send(method: str, url: str, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - operator's URL
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            return Answer(answer.status, answer.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read())


# -- the table ------------------------------------------------------------------------------------------


def _width(text: str) -> int:
    """Display width: East Asian wide and full-width characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


NOT_MEASURED_TEXT = "計測なし not measured"


def count(value: int | None) -> str:
    """A count, or "not measured" where the channel cannot report it (never a zero)."""
    return NOT_MEASURED_TEXT if value is None else f"{value:,}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns (the first left, the rest right), correct for Japanese text too."""
    widths = [max(_width(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - _width(cell))
            out.append(cell + pad if i == 0 else pad + cell)
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line([str(c) for c in r]) for r in rows)])


def _lift_line(lift: Lift) -> str:
    from cems.reports.html import interval, p_text, pct, points

    level = f"{lift.confidence * 100:.0f}%"
    text = (
        f"リフト Lift {points(lift.absolute)} ({level} CI {interval(lift, relative=False)})  "
        f"相対 Relative {pct(lift.relative, signed=True)} ({level} CI {interval(lift, relative=True)})  "
        f"p = {p_text(lift.p_value)}"
    )
    return "\n".join([text, *(f"  note: {n}" for n in lift.notes)])


def render_text(report: ScenarioReport) -> str:
    from cems.reports.html import pct, points, yen

    version = f"v{report.version}" if report.version is not None else "all versions / 全バージョン"
    lines = [
        f"{report.name or report.scenario_id} ({report.scenario_id})  state {report.state or '-'}  "
        f"{version}  counted {', '.join(f'v{v}' for v in report.versions) or '-'}",
        f"goal / ゴール: {report.goal or '-'}",
        "",
    ]
    group_header = [
        "グループ Group",
        "対象 Enrolled",
        "CV Converted",
        "CV率 Rate",
        "売上 Revenue",
        "売上/人 Per enrolled",
    ]
    groups = [
        (label, g)
        for label, g in (("配信群 Treatment", report.treatment), ("コントロール群 Holdout", report.holdout))
    ]
    lines.append(
        table(
            group_header,
            [
                [
                    label,
                    f"{g.enrolled:,}",
                    f"{g.converted:,}",
                    pct(g.conversion_rate),
                    yen(g.revenue),
                    yen(g.revenue_per_enrolled),
                ]
                for label, g in groups
            ],
        )
    )
    lines += [_lift_line(report.lift), ""]
    if report.variants:
        rows = []
        for v in report.variants:
            rows.append(
                [
                    v.variant,
                    f"{v.treatment.enrolled:,}",
                    f"{v.treatment.converted:,}",
                    pct(v.treatment.conversion_rate),
                    pct(v.lift.holdout_rate),
                    points(v.lift.absolute),
                    "-"
                    if v.lift.absolute_ci is None
                    else f"{points(v.lift.absolute_ci.low)}…{points(v.lift.absolute_ci.high)}",
                    "-" if v.lift.p_value is None else f"{v.lift.p_value:.3f}",
                    "own" if v.compared_with == "variant_holdout" else "all",
                ]
            )
        header = [
            "バリアント Variant",
            "対象 Enrolled",
            "CV",
            "CV率 Rate",
            "対照 Holdout",
            "リフト Lift",
            "95% CI",
            "p",
            "vs",
        ]
        lines += [table(header, rows), ""]
    if report.steps:
        header = [
            "ステップ Step",
            "バリアント Variant",
            "チャネル Channel",
            "送信 Sent",
            "到達 Delivered",
            "失敗 Failed",
            "抑止 Suppressed",
            "上限 Capped",
            "延期 Deferred",
            "保留 Held out",
            "開封 Opened",
            "クリック Clicked",
            "CV",
            "開封率 Open",
            "クリック率 Click",
        ]
        rows = [
            [
                s.step_id,
                s.variant or "-",
                s.channel or "-",
                *(
                    count(n)
                    for n in (
                        s.sent,
                        s.delivered,
                        s.failed,
                        s.suppressed,
                        s.capped,
                        s.deferred,
                        s.held_out,
                        s.opened,
                        s.clicked,
                        s.converted,
                    )
                ),
                NOT_MEASURED_TEXT if s.opened is None else pct(s.open_rate),
                pct(s.click_rate),
            ]
            for s in report.steps
        ]
        lines += [table(header, rows), ""]
        chosen = [s for s in report.steps if s.chosen_by_engagement or s.chosen_by_default]
        if chosen:
            lines.append("最適チャネルの選択 Best-channel choices")
            choice_header = [
                "ステップ Step",
                "バリアント Variant",
                "チャネル Channel",
                "反応 By engagement",
                "既定 By default",
            ]
            choice_rows = [
                [
                    s.step_id,
                    s.variant or "-",
                    s.channel or "-",
                    count(s.chosen_by_engagement),
                    count(s.chosen_by_default),
                ]
                for s in chosen
            ]
            lines += [table(choice_header, choice_rows), ""]
    if report.channels:
        header = [
            "チャネル Channel",
            "送信 Sent (IMP)",
            "到達 Delivered",
            "開封 Opened",
            "クリック Clicked",
            "CV",
        ]
        rows = [
            [c.channel, *(count(n) for n in (c.sent, c.delivered, c.opened, c.clicked, c.converted))]
            for c in report.channels
        ]
        lines += [table(header, rows), ""]
        lines += [f"IMP {c.channel}: {c.imp}" for c in report.channels if c.imp] + [""]
    if report.conversions:
        rows = [
            [share.attributed_to, f"{share.converted:,}", yen(share.revenue)] for share in report.conversions
        ]
        lines += [table(["CV の帰属 Attributed to", "CV", "売上 Revenue"], rows), ""]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines).rstrip("\n")


def reindex_command(args: argparse.Namespace) -> int:
    """A one-off backfill of contact lookup items (docs/customers.md), straight on CustomersTable with
    the caller's IAM credentials: a Scan of every profile, segment by segment. Exit 0 done, 2 when
    the table cannot be reached. Prints counts only."""
    import boto3
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as BotoClientError

    from cems.adapters.dynamodb.customers import CustomerStore

    if not 1 <= args.segments <= 64:
        print("error: --segments must be 1-64", file=sys.stderr)
        return 2
    try:
        if args.stage is None:
            client = boto3.client(
                "dynamodb",
                endpoint_url=f"http://127.0.0.1:{os.environ.get('CEMS_AWS_PORT', '4566')}",
                region_name="ap-northeast-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
            )
            table = "CustomersTable"
        else:
            stack_name, region = stage_stack(args.stage, Path(args.config))
            table = stack_outputs(stack_name, region)["CustomersTableName"]
            client = boto3.client("dynamodb", region_name=region)
        store = CustomerStore(table, client)
        totals = [0, 0, 0]
        for segment in range(args.segments):
            for i, n in enumerate(store.backfill_lookups(segment, args.segments)):
                totals[i] += n
    except (BotoCoreError, BotoClientError, KeyError) as error:
        print(
            f"error: {type(error).__name__}: the lookups were not all written (run it again)", file=sys.stderr
        )
        return 2
    read, written, changed = totals
    print(
        f"顧客 {read} 件を確認し、{written} 件に検索用キーを作成しました / read {read} customers, "
        f"wrote lookups for {written}"
        + (f"; {changed} changed meanwhile (their own write indexed them)" if changed else "")
    )
    return 0
