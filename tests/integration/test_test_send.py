"""`cems scenario test-send` end to end under moto: the CLI renders a step and queues a test dispatch
on the local stack (a moto server on a free port, as `cems local` runs it) or on a deployed stage
(found from samconfig.toml and the stack's outputs); LineSender pushes it to the staff LINE account
alone, reading no profile; EmailSender mails the staff address, marked as a test; nothing is
counted in the report counters and no staff address or LINE user id is printed or stored."""

from __future__ import annotations

import email
import json
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.customers import CustomerStore
from cems.adapters.dynamodb.email_deliveries import DeliveryRecords
from cems.adapters.dynamodb.line_deliveries import DeliveryStore
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.dynamodb.suppression import SuppressionStore
from cems.adapters.ses import SesGateway
from cems.cli import main
from cems.email.compose import TEST_HEADER, TEST_SUBJECT_PREFIX, SignedLinks
from cems.email.config import EmailSettings
from cems.email.dispatch import EmailDispatch
from cems.email.sender import EmailSender, Status
from cems.engagement.tokens import TokenSigner
from cems.line.deliveries import RecipientStatus, UnitKind, UnitStatus, retry_key
from cems.line.dispatch import LineDispatch, LineMessage
from cems.line.sender import CallResult, LineSender, classify_error
from cems.local.cfn import Template
from cems.local.resources import create_resources
from cems.models import ChannelState, Profile
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from tests.integration.conftest import TEMPLATE

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples" / "scenarios"
SAMCONFIG = ROOT / "samconfig.toml"
REGION = "ap-northeast-1"
STAFF_LINE = "U" + "5" * 32
CUSTOMER_LINE = "U" + "c" * 32
STAFF_MAIL = "staff@midori-tea.example.jp"
SENDER = "shop@midori-tea.example.jp"
BASE = "https://engage.midori-tea.example.jp"


# --- the local stack and its pieces -------------------------------------------------------------------


@dataclass
class Stack:
    url: str

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def queued(self, queue: str) -> list[str]:
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        bodies: list[str] = []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            for m in messages:
                bodies.append(m["Body"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if not messages:
                return bodies

    def customer(self, customer_id: str, *, line: bool = False, mail: bool = False, **traits: Any) -> None:
        """A customer who may NOT be messaged: unfollowed on LINE, no consent to email."""
        now = datetime.now(UTC)
        state = ChannelState(reachable=line, consent=line, updated_at=now, reason="unfollow")
        mail_state = ChannelState(reachable=True, consent=mail, updated_at=now, reason="identify")
        profile = Profile(
            customer_id=customer_id,
            traits={"email": "customer@example.com", **traits},
            line_user_id=CUSTOMER_LINE,
            channels={"line": state, "email": mail_state},
            first_seen_at=now,
            updated_at=now,
        )
        dynamodb = self.client("dynamodb")
        dynamodb.put_item(
            TableName="CustomersTable", Item=CustomerStore("CustomersTable", dynamodb).profile_item(profile)
        )

    def counters(self) -> ReportCounters:
        return ReportCounters("JourneysTable", self.client("dynamodb"))

    def deliveries_text(self) -> str:
        items = self.client("dynamodb").scan(TableName="DeliveriesTable", ConsistentRead=True)["Items"]
        return json.dumps(items, ensure_ascii=False)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("CEMS_AWS_PORT", str(port))
    create_resources(Template.load(TEMPLATE), url)
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages.clear()
    try:
        yield Stack(url)
    finally:
        # The server shares moto's in-process state: leave nothing behind for other tests.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5)
        server.stop()
        clock.reset()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shown(out: str) -> dict[str, str]:
    """The `name: value` lines the command printed."""
    fields = {}
    for line in out.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name in ("step", "channel", "key", "preview"):
            fields[name] = value.strip()
    return fields


# --- LINE ---------------------------------------------------------------------------------------------


@dataclass
class FakeGateway:
    """LINE as the sender sees it: records each call; answers 200 unless told otherwise."""

    answers: list[CallResult] = field(default_factory=list)
    calls: list[tuple[UnitKind, list[str], list[LineMessage], str, bool]] = field(default_factory=list)

    def send(
        self, kind: UnitKind, to: Sequence[str], messages: list[LineMessage], key: str, quiet: bool
    ) -> CallResult:
        self.calls.append((kind, list(to), messages, key, quiet))
        if self.answers:
            return self.answers.pop(0)
        return CallResult(UnitStatus.SENT, 200, line_request_id="req-1")


class NoProfileReads(CustomerStore):
    """A test send to a staff account must not look at any customer's profile."""

    def __init__(self) -> None:
        super().__init__("CustomersTable", None)  # type: ignore[arg-type]

    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None:
        raise AssertionError("a test send read a profile")

    def profiles(self, customer_ids: Sequence[str]) -> dict[str, Profile]:
        raise AssertionError("a test send read profiles")


def line_sender(stack: Stack, gateway: FakeGateway) -> LineSender:
    dynamodb = stack.client("dynamodb")
    return LineSender(
        NoProfileReads(),
        DeliveryStore("DeliveriesTable", dynamodb, timedelta(days=395)),
        gateway,  # type: ignore[arg-type]
        counters=stack.counters(),
    )


def test_a_line_step_is_queued_and_pushed_to_the_staff_account_only(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = EXAMPLES / "line_welcome.json"
    code, out, err = run(
        capsys, "scenario", "test-send", str(scenario), "--step", "welcome", "--to", f"line:{STAFF_LINE}"
    )
    assert (code, err) == (0, "")
    assert "LineSendQueue" in out and "test send queued" in out and "テスト送信" in out
    printed = shown(out)
    assert printed["step"] == "welcome" and printed["channel"] == "line"
    assert printed["key"].startswith("test#line-welcome#welcome#")
    assert printed["preview"].startswith("茶寮みどりの公式アカウントを友だち追加")
    assert STAFF_LINE not in out

    [body] = stack.queued("LineSendQueue")
    assert stack.queued("EmailSendQueue") == []
    dispatch = LineDispatch.model_validate_json(body)
    assert (dispatch.test, dispatch.test_line_user_id, dispatch.recipients) == (
        True,
        STAFF_LINE,
        ["cus_test"],
    )
    assert (dispatch.scenario_id, dispatch.version, dispatch.step_id) == ("line-welcome", 1, "welcome")
    assert dispatch.idempotency_key == printed["key"]

    gateway = FakeGateway()
    sender = line_sender(stack, gateway)
    report = sender.handle(body)
    assert (report.sent, report.api_calls, report.test, report.skipped_unreachable) == (1, 1, True, 0)
    [(kind, to, messages, key, _quiet)] = gateway.calls
    assert (kind, to) == (UnitKind.PUSH, [STAFF_LINE])
    assert messages == dispatch.messages
    assert key == retry_key(dispatch.idempotency_key, "m0000")

    # Recorded as a test in the Deliveries table, without the staff LINE user id.
    state = sender.deliveries.state(dispatch.idempotency_key)
    assert state.recipients["cus_test"].status is RecipientStatus.SENT
    assert state.plan is not None and state.plan.metadata["test"] is True
    assert STAFF_LINE not in stack.deliveries_text()

    # One audit entry, naming the scenario, step and channel, never the staff member's LINE id.
    entries = stack.client("dynamodb").scan(TableName="AuditTable")["Items"]
    assert [(e["action"]["S"], e["target"]["S"], e["actor"]["S"]) for e in entries] == [
        ("test_send", "line-welcome", "local")
    ]
    assert STAFF_LINE not in json.dumps(entries)

    # The queue delivering it again sends nothing more; and nothing was counted for the reports.
    again = sender.handle(body)
    assert (again.sent, again.api_calls, again.already_done) == (0, 0, 1)
    assert len(gateway.calls) == 1
    assert stack.counters().cells("line-welcome") == []


def test_a_stored_profile_renders_the_step_but_the_customer_gets_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = json.loads((EXAMPLES / "line_welcome.json").read_text(encoding="utf-8"))
    [welcome] = [s for s in scenario["steps"] if s["id"] == "welcome"]
    welcome["line"] = [{"type": "text", "text": "{{ profile.traits.last_name }}様、ようこそ"}]
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario, ensure_ascii=False), encoding="utf-8")
    stack.customer("cus_real_0001", last_name="佐藤")

    code, out, err = run(
        capsys,
        "scenario",
        "test-send",
        str(path),
        "--step",
        "welcome",
        "--to",
        f"line:{STAFF_LINE}",
        "--profile",
        "cus_real_0001",
    )
    assert (code, err) == (0, "")
    assert shown(out)["preview"] == "佐藤様、ようこそ"
    [body] = stack.queued("LineSendQueue")
    dispatch = LineDispatch.model_validate_json(body)
    assert dispatch.recipients == ["cus_real_0001"]
    assert CUSTOMER_LINE not in body

    # The customer has unfollowed: the test still reaches the staff account, and only it. LINE
    # answering 409 (an earlier attempt got through) counts as sent, as for any dispatch.
    gateway = FakeGateway(answers=[classify_error(409, b'{"message": "retry key accepted"}', {})])
    report = line_sender(stack, gateway).handle(body)
    assert report.sent == 1
    assert [call[1] for call in gateway.calls] == [[STAFF_LINE]]
    assert stack.counters().cells("line-welcome") == []


def test_without_a_needed_value_nothing_is_queued(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = json.loads((EXAMPLES / "line_welcome.json").read_text(encoding="utf-8"))
    scenario["steps"][0]["line"] = [{"type": "text", "text": "{{ profile.traits.last_name }}様"}]
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario, ensure_ascii=False), encoding="utf-8")
    code, out, err = run(
        capsys, "scenario", "test-send", str(path), "--step", "welcome", "--to", f"line:{STAFF_LINE}"
    )
    assert (code, out) == (2, "")
    assert "profile.traits.last_name" in err and "welcome" in err

    # With the value from a profile file, it goes.
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"traits": {"last_name": "鈴木"}}, ensure_ascii=False), encoding="utf-8")
    code, out, err = run(
        capsys,
        "scenario",
        "test-send",
        str(path),
        "--step",
        "welcome",
        "--to",
        f"line:{STAFF_LINE}",
        "--profile-file",
        str(profile),
    )
    assert (code, err) == (0, "")
    assert shown(out)["preview"] == "鈴木様"
    assert len(stack.queued("LineSendQueue")) == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--step", "nope", "--to", f"line:{STAFF_LINE}"], "no step 'nope'"),
        (["--step", "wait-3-days", "--to", f"line:{STAFF_LINE}"], "not a send step"),
        (["--step", "welcome", "--to", f"email:{STAFF_MAIL}"], "sends on LINE only"),
        (["--step", "welcome", "--to", "line:U1234"], "U and 32 hex digits"),
        (["--step", "welcome", "--to", STAFF_LINE], "line:<LINE user id>"),
        (
            ["--step", "welcome", "--to", f"line:{STAFF_LINE}", "--profile", "cus_nobody"],
            "no customer cus_nobody",
        ),
    ],
)
def test_refusals_are_plain_and_queue_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, "scenario", "test-send", str(EXAMPLES / "line_welcome.json"), *argv)
    assert (code, out) == (2, "")
    assert fragment in err
    assert STAFF_LINE not in err and STAFF_MAIL not in err
    assert stack.queued("LineSendQueue") == [] and stack.queued("EmailSendQueue") == []


def test_an_invalid_scenario_file_is_reported_and_not_sent(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"id": "broken", "steps": []}', encoding="utf-8")
    code, _out, _err = run(
        capsys, "scenario", "test-send", str(path), "--step", "x", "--to", f"line:{STAFF_LINE}"
    )
    assert code == 1
    assert stack.queued("LineSendQueue") == []


def test_without_the_local_stack_the_error_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEMS_AWS_PORT", "9")  # nothing listens there
    code, out, err = run(
        capsys,
        "scenario",
        "test-send",
        str(EXAMPLES / "line_welcome.json"),
        "--step",
        "welcome",
        "--to",
        f"line:{STAFF_LINE}",
    )
    assert (code, out) == (2, "")
    assert "cems local" in err and STAFF_LINE not in err


# --- email --------------------------------------------------------------------------------------------


def email_sender(stack: Stack) -> EmailSender:
    dynamodb = stack.client("dynamodb")
    stack.client("sesv2").create_email_identity(EmailIdentity="midori-tea.example.jp")
    settings = EmailSettings(
        from_address=SENDER,
        from_name="茶寮みどり",
        postal_address="〒604-8005 京都府京都市中京区恵比須町 1-2",
        contact="075-000-0000",
        configuration_set=None,
        engage_base_url=BASE,
    )
    signer = TokenSigner(lambda: b"integration-tracking-secret")
    return EmailSender(
        settings,
        NoProfileReads(),
        SuppressionStore("CustomersTable", dynamodb),
        DeliveryRecords("DeliveriesTable", dynamodb, timedelta(days=395)),
        stack.counters(),
        SesGateway(lambda: stack.client("sesv2")),
        lambda d: SignedLinks(BASE, signer, d),
    )


def sent_mail() -> list[tuple[list[str], EmailMessage]]:
    mails = []
    for raw in ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages:
        parsed = email.message_from_string(raw.raw_data, policy=default)
        assert isinstance(parsed, EmailMessage)
        mails.append((list(dict.fromkeys(raw.destinations)), parsed))
    return mails


def test_an_email_step_is_mailed_to_the_staff_address_marked_as_a_test(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "scenario",
        "test-send",
        str(EXAMPLES / "follow_mail.json"),
        "--step",
        "brewing-guide",
        "--to",
        f"email:{STAFF_MAIL}",
    )
    assert (code, err) == (0, "")
    printed = shown(out)
    assert printed["channel"] == "email" and "EmailSendQueue" in out
    assert STAFF_MAIL not in out
    [body] = stack.queued("EmailSendQueue")
    assert stack.queued("LineSendQueue") == []
    dispatch = EmailDispatch.model_validate_json(body)
    assert (dispatch.test, dispatch.to_address, dispatch.customer_id) == (True, STAFF_MAIL, "cus_test")
    assert dispatch.subject == printed["preview"]

    report = email_sender(stack).handle(body)
    assert report.status is Status.SENT and report.test
    [(to, mail)] = sent_mail()
    assert to == [STAFF_MAIL]
    assert mail["Subject"] == TEST_SUBJECT_PREFIX + dispatch.subject
    assert mail[TEST_HEADER] == "1"
    assert mail["List-Unsubscribe"] and mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert stack.counters().cells(dispatch.scenario_id or "") == []


def test_a_customer_without_email_consent_still_renders_a_test_for_the_staff(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stack.customer("cus_real_0002", last_name="田中")
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"event": "Order Completed", "timestamp": "2026-11-20T10:00:00+09:00", "properties": {}}),
        encoding="utf-8",
    )
    code, out, err = run(
        capsys,
        "scenario",
        "test-send",
        str(EXAMPLES / "follow_mail.json"),
        "--step",
        "review-request",
        "--to",
        f"email:{STAFF_MAIL}",
        "--profile",
        "cus_real_0002",
        "--event-file",
        str(event),
    )
    assert (code, err) == (0, "")
    [body] = stack.queued("EmailSendQueue")
    assert "customer@example.com" not in body  # the customer's own address is not where it goes
    report = email_sender(stack).handle(body)
    assert report.status is Status.SENT
    [(to, _mail)] = sent_mail()
    assert to == [STAFF_MAIL]
    assert stack.counters().cells("follow-mail-sencha") == []
    assert shown(out)["key"].startswith("test#follow-mail-sencha#review-request#")


# --- a deployed stage ---------------------------------------------------------------------------------

STAGE_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "LineSendQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "EmailSendQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "AuditTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
            },
        },
    },
    "Outputs": {
        "LineSendQueueUrl": {"Value": {"Ref": "LineSendQueue"}},
        "EmailSendQueueUrl": {"Value": {"Ref": "EmailSendQueue"}},
        "AuditTableName": {"Value": {"Ref": "AuditTable"}},
    },
}


def test_with_a_stage_the_dispatch_goes_to_that_stages_queue(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    parameters = tomllib.loads(SAMCONFIG.read_text())["dev"]["deploy"]["parameters"]
    cloudformation = boto3.client("cloudformation", region_name=parameters["region"])
    cloudformation.create_stack(StackName=parameters["stack_name"], TemplateBody=json.dumps(STAGE_TEMPLATE))
    [stack] = cloudformation.describe_stacks(StackName=parameters["stack_name"])["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    code, out, err = run(
        capsys,
        "scenario",
        "test-send",
        str(EXAMPLES / "line_welcome.json"),
        "--step",
        "welcome",
        "--to",
        f"line:{STAFF_LINE}",
        "--stage",
        "dev",
        "--config",
        str(SAMCONFIG),
    )
    assert (code, err) == (0, "")
    sqs = boto3.client("sqs", region_name=parameters["region"])
    [message] = sqs.receive_message(QueueUrl=outputs["LineSendQueueUrl"]).get("Messages", [])
    assert LineDispatch.model_validate_json(message["Body"]).idempotency_key == shown(out)["key"]
