"""`cems audience count FILE`: a scenario file's audience before it sends, from the admin API
(POST /admin/audience, cems.console.audience).

The file is checked here first (cems.scenario.validation: a file with mistakes is not sent), then
posted as it is. Where the API is, as for `cems report` (cems.reports.cli): the local stack's HTTP
port by default, a deployed stage's ApiUrl with `--stage` (the request signed with SigV4 for the
routes' IAM authoriser, the body included in the signature), or `--url`.

A large table is counted by a run fanned out over segments (cems.console.audience_runs): the API
answers 202 with the run, and the command asks `GET /admin/audience/{run}` every few seconds,
printing the progress, until the count is complete (`--no-wait`: prints the run and stops).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cems.console.audience import AudienceCount

# (url, headers, body) -> (status, answer body): a POST; with body None, a GET
PostSend = Callable[[str, dict[str, str], bytes | None], tuple[int, bytes]]
# How often a run is asked for its progress, and for how long at most.
POLL_SECONDS = 3.0
WAIT_SECONDS = 1800.0

# Why a customer read is not in the audience (the entry decision's reasons), for people.
EXCLUDED_LABELS = {
    "audience": "条件に合わない / audience conditions not met",
    "blacklisted": "ブラックリスト / blacklisted",
    "already_entered": "エントリー済み（再エントリーなし） / entered before (no re-entry)",
    "still_enrolled": "ジャーニー中 / still in the journey",
    "cooldown": "再エントリー待ち / in the re-entry cooldown",
    "higher_priority_active": "優先度の高いシナリオ中 / in a higher-priority scenario",
    "topic_left": "このトピックを配信停止 / left this scenario's topic",
}


def register(commands: Any) -> None:
    """Adds `audience count` to the `cems` sub-commands; it sets `handler`."""
    audience = commands.add_parser(
        "audience",
        help="配信前の対象者数 / a scenario's audience before it sends",
    )
    audience_commands = audience.add_subparsers(dest="audience_command", required=True)
    count = audience_commands.add_parser(
        "count",
        help="シナリオの対象者数・チャネル別の到達数・ホールドアウト・サンプル"
        " / matching customers, reach per channel, holdout and a masked sample",
        description="シナリオファイルの対象者を数えます（一斉配信と同じ判定）。"
        " Counts a scenario file's audience with the broadcast's own decisions.",
    )
    count.add_argument("file", type=Path, help="a scenario JSON file / シナリオファイル")
    count.add_argument("--json", action="store_true", help="print the API's answer as JSON / JSON で出力")
    count.add_argument(
        "--stage", help="a deployed stage from samconfig.toml (dev, prod); default: the local stack"
    )
    count.add_argument("--config", default="samconfig.toml", help="path to samconfig.toml")
    count.add_argument(
        "--url", help="the API's base URL (default: local http://127.0.0.1:$CEMS_HTTP_PORT, or the stage's)"
    )
    count.add_argument(
        "--no-wait",
        action="store_true",
        help="大きな表の集計を待たずに集計 ID を表示 / for a large table, print the run and do not wait",
    )
    count.add_argument(
        "--wait-seconds",
        type=float,
        default=WAIT_SECONDS,
        help=f"集計を待つ最長の秒数 / the longest to wait for a run (default {WAIT_SECONDS:.0f})",
    )
    count.set_defaults(handler=count_command)


def count_command(
    args: argparse.Namespace, send: PostSend | None = None, sleep: Callable[[float], None] | None = None
) -> int:
    """Prints the counts (or --json); exit 1 for a scenario with mistakes or a refused request, 2
    when the file cannot be read or the API cannot be reached, 3 when a run was not complete in
    --wait-seconds (the counts so far are printed, with the run to ask for later)."""
    from pydantic import ValidationError

    from cems.console.audience import AudienceCount
    from cems.reports.cli import admin_target
    from cems.scenario.validation import validate_file

    report = validate_file(args.file)
    if not report.valid:
        print(report.summary_ja() + f" / the scenario has {len(report.errors)} error(s)", file=sys.stderr)
        for issue in report.errors:
            print(f"  {issue.line()}", file=sys.stderr)
        return 2 if any(e.code == "file" for e in report.errors) else 1
    body = args.file.read_bytes()
    target = admin_target(args.stage, Path(args.config), args.url)
    url = target.base_url.rstrip("/") + "/admin/audience"
    transport = send or http_post

    def request(url: str, body: bytes | None) -> tuple[int, bytes] | None:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        if target.sign_region is not None:
            headers = sign_request("GET" if body is None else "POST", url, headers, body, target.sign_region)
        try:
            return transport(url, headers, body)
        except OSError as exc:
            where = f"stage {args.stage}" if args.stage else "the local stack (is `cems local` running?)"
            print(f"error: cannot reach {where} at {url}: {exc}", file=sys.stderr)
            return None

    answered = request(url, body)
    if answered is None:
        return 2
    status, answer = answered
    waited = 0.0
    while True:
        if status not in (200, 202):
            return _refused(status, answer)
        try:
            count = AudienceCount.model_validate_json(answer)
        except (ValueError, ValidationError) as exc:
            print(f"error: the API answered something that is not an audience count: {exc}", file=sys.stderr)
            return 2
        if (
            count.run is None
            or count.complete
            or count.stalled
            or args.no_wait
            or waited >= args.wait_seconds
        ):
            break
        # Progress on stderr, so --json's stdout stays one document.
        print(_progress(count), file=sys.stderr)
        (sleep or time.sleep)(POLL_SECONDS)
        waited += POLL_SECONDS
        answered = request(f"{url}/{count.run}", None)
        if answered is None:
            return 2
        status, answer = answered
    print(count.model_dump_json(indent=2) if args.json else render_text(count))
    if count.run is not None and not count.complete and not args.no_wait:
        print(
            f"集計は続いています / the count goes on: cems を再実行するか GET /admin/audience/{count.run}",
            file=sys.stderr,
        )
        return 3
    return 0


def _progress(count: AudienceCount) -> str:
    done, total = count.segments_done or 0, count.segments
    return (
        f"集計中 counting: {done}/{total} セグメント segments, 対象 matching {count.matching:,}"
        f"（{count.customers_read:,} 人を読了 customers read, {count.elapsed_ms / 1000:.0f} s）"
    )


def render_text(count: AudienceCount) -> str:
    """The counts as a few aligned tables, Japanese first with English alongside."""
    from cems.reports.cli import table

    lines = [f"シナリオ Scenario: {count.scenario_id} ({count.trigger_type})"]
    if count.run is not None:
        state = "完了 complete" if count.complete else "集計中 counting"
        lines.append(
            f"分割集計 Fanned-out count: {count.run}（{state}: {count.segments_done or 0}/{count.segments}"
            " セグメント segments）"
        )
    if count.note:
        lines.append(f"注意 Note: {count.note}")
    lines += [
        "",
        table(
            ["対象者 Audience", "人数 Customers"],
            [
                ["対象の顧客 Matching", f"{count.matching:,}"],
                ["ホールドアウト Holdout (sent nothing)", f"{count.holdout:,}"],
                ["ホールドアウト外 Outside the holdout", f"{count.outside_holdout:,}"],
                ["送信できる Sendable (reachable on a send channel)", f"{count.sendable:,}"],
            ],
        ),
        "",
        table(
            [
                "チャネル Channel（到達可能・同意あり reachable, consented）",
                "対象内 Matching",
                "ホールドアウト外 Outside",
            ],
            [[c.title, f"{c.reachable:,}", f"{c.reachable_outside_holdout:,}"] for c in count.channels],
        ),
    ]
    if count.excluded:
        lines += [
            "",
            table(
                ["対象外の理由 Not in the audience", "人数 Customers"],
                [[EXCLUDED_LABELS.get(r, r), f"{n:,}"] for r, n in count.excluded.items()],
            ),
        ]
    if count.sample:
        rows = [
            [
                str(s.profile.get("customer_id", "")),
                "ホールドアウト holdout" if s.holdout else "配信 treatment",
                ", ".join(c.value for c in s.reachable) or "-",
                _traits(s.profile),
            ]
            for s in count.sample
        ]
        lines += ["", "サンプル（マスク済み） Sample (masked)"]
        lines.append(table(["顧客 Customer", "群 Group", "到達 Reach", "属性 Traits"], rows))
    requests = "-" if count.requests is None else f"{count.requests:,}"
    lines += [
        "",
        f"読んだ顧客 Customers read: {count.customers_read:,}（項目 items scanned {count.items_scanned:,}）"
        f"  セグメント Segments: {count.segments}  リクエスト Requests: {requests}"
        f"  所要時間 Elapsed: {count.elapsed_ms / 1000:.1f} s",
    ]
    if not count.complete:
        lines.append("一部のみ Partial: 時間内に全員を読めませんでした / not every customer was read in time")
    return "\n".join(lines)


def _traits(profile: dict[str, Any], width: int = 60) -> str:
    traits = profile.get("traits") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(traits.items()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _refused(status: int, body: bytes) -> int:
    try:
        document = json.loads(body.decode("utf-8"))
        message = f"{document.get('error', '')}: {document.get('message', '')}"
        problems = document.get("problems") or []
    except ValueError:
        message, problems = body.decode("utf-8", "replace")[:500], []
    print(f"error: {status} {message}", file=sys.stderr)
    for problem in problems:
        print(f"  {problem.get('path', '')}: {problem.get('message', '')}", file=sys.stderr)
    return 1


# -- transport ----------------------------------------------------------------------------------------


def sign_request(
    method: str, url: str, headers: dict[str, str], body: bytes | None, region: str, credentials: Any = None
) -> dict[str, str]:
    """The headers with a SigV4 signature of the request and its body (service execute-api), from the
    caller's AWS credentials (environment, profile, SSO: boto3's usual chain)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    if credentials is None:
        found = boto3.Session().get_credentials()
        if found is None:
            raise SystemExit("error: no AWS credentials to sign the request with (aws configure / sso login)")
        credentials = found.get_frozen_credentials()
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


def http_post(url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
    """A POST of `body`, or a GET when it is None (a run's progress)."""
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        # A count answered at once takes up to the API's 30 s.
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - operator's URL
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
