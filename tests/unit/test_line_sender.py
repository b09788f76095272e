"""LINE sending rules without AWS: the dispatch model, the plan, retry keys, LINE's answers, backoff,
and the lazy import of line-bot-sdk."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from cems.line.deliveries import RecipientStatus, UnitKind, UnitStatus, retry_key
from cems.line.dispatch import LineDispatch
from cems.line.sender import LineSender, classify_error, make_plan, reachability, scrub
from cems.models import ChannelState, Profile
from pydantic import ValidationError

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TEXT = {"type": "text", "text": "新茶のご案内です"}


def profile(n: int, *, reachable: bool = True, consent: bool = True, line: bool = True) -> Profile:
    return Profile(
        customer_id=f"cus_{n}",
        line_user_id=f"U{n:032x}" if line else None,
        channels={"line": ChannelState(reachable=reachable, consent=consent, updated_at=NOW, reason=None)},
        first_seen_at=NOW,
        updated_at=NOW,
    )


def dispatch(recipients: list[str], **extra: Any) -> LineDispatch:
    return LineDispatch.model_validate(
        {"idempotency_key": "k1", "recipients": recipients, "messages": [TEXT], **extra}
    )


# --- the dispatch model ---------------------------------------------------------------------------


def test_messages_are_checked_by_the_sdk_and_normalised() -> None:
    d = LineDispatch.model_validate(
        {
            "idempotency_key": "k",
            "recipients": ["a", "a", "b"],
            "messages": [{"type": "sticker", "packageId": "446", "stickerId": "1988", "unknown": 1}],
        }
    )
    assert d.recipients == ["a", "b"]
    assert d.messages == [{"type": "sticker", "packageId": "446", "stickerId": "1988"}]


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([TEXT] * 6, "at most 5"),
        ([{"type": "text"}], "not a valid LINE text message"),
        ([{"type": "carrier-pigeon"}], "not a valid LINE carrier-pigeon message"),
        ([{"text": "no type"}], "needs a string `type`"),
        ([{"type": "text", "text": "あ" * 5001}], "at most 5000"),
        (["text"], "JSON object"),
    ],
)
def test_invalid_messages_are_refused(messages: list[Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        dispatch(["a"], messages=messages)


def test_text_of_exactly_5000_characters_is_fine() -> None:
    assert dispatch(["a"], messages=[{"type": "text", "text": "あ" * 5000}])


def test_personalised_content_must_name_recipients_and_cover_those_without_common_content() -> None:
    with pytest.raises(ValidationError, match="not in recipients"):
        dispatch(["a"], personalised={"b": [TEXT]})
    with pytest.raises(ValidationError, match="no personalised content"):
        dispatch(["a", "b"], messages=[], personalised={"a": [TEXT]})
    d = dispatch(["a", "b"], messages=[], personalised={"a": [TEXT], "b": [TEXT]})
    assert d.shared_recipients() == []
    assert d.content_for("a") == [TEXT]


def test_recipients_are_required_and_bounded() -> None:
    with pytest.raises(ValidationError):
        dispatch([])
    with pytest.raises(ValidationError):
        dispatch([f"c{i}" for i in range(5001)])


def test_fingerprint_follows_content_and_audience() -> None:
    assert dispatch(["a"]).fingerprint() == dispatch(["a"]).fingerprint()
    assert dispatch(["a"]).fingerprint() != dispatch(["b"]).fingerprint()
    assert (
        dispatch(["a"]).fingerprint()
        != dispatch(["a"], messages=[{"type": "text", "text": "x"}]).fingerprint()
    )


def test_round_trip_through_sqs_body() -> None:
    d = dispatch(["a"], scenario_id="s", step_id="1", variant="B", test=True)
    assert LineDispatch.model_validate_json(d.to_sqs_body()) == d


# --- reachability and the plan --------------------------------------------------------------------


def test_reachability_uses_the_profiles_line_contact() -> None:
    assert reachability(profile(1)) is None
    assert reachability(None) is not None
    unfollowed = reachability(profile(2, reachable=False))
    assert unfollowed is not None and unfollowed.status is RecipientStatus.SKIPPED_UNREACHABLE
    no_consent = reachability(profile(3, consent=False))
    assert no_consent is not None and no_consent.status is RecipientStatus.SKIPPED_NO_CONSENT
    no_line = reachability(profile(4, line=False))
    assert no_line is not None and no_line.status is RecipientStatus.SKIPPED_UNREACHABLE


def test_1200_identical_recipients_make_three_multicast_units() -> None:
    profiles = {f"cus_{n}": profile(n) for n in range(1200)}
    plan = make_plan(dispatch(list(profiles)), profiles)
    assert [(u.unit_id, u.kind, len(u.customer_ids)) for u in plan.units] == [
        ("m0000", UnitKind.MULTICAST, 500),
        ("m0001", UnitKind.MULTICAST, 500),
        ("m0002", UnitKind.MULTICAST, 200),
    ]
    assert [c for u in plan.units for c in u.customer_ids] == list(profiles)


def test_personalised_content_is_one_push_each_and_the_rest_multicast() -> None:
    profiles = {f"cus_{n}": profile(n) for n in range(4)}
    d = dispatch(list(profiles), personalised={"cus_1": [TEXT], "cus_3": [TEXT]})
    plan = make_plan(d, profiles)
    assert [(u.unit_id, u.kind, u.customer_ids) for u in plan.units] == [
        ("m0000", UnitKind.MULTICAST, ("cus_0", "cus_2")),
        ("p#cus_1", UnitKind.PUSH, ("cus_1",)),
        ("p#cus_3", UnitKind.PUSH, ("cus_3",)),
    ]


def test_unreachable_recipients_are_set_aside_with_a_reason() -> None:
    profiles = {"cus_1": profile(1), "cus_2": profile(2, reachable=False), "cus_3": profile(3, consent=False)}
    twin = profile(1).model_copy(update={"customer_id": "cus_9"})
    profiles["cus_9"] = twin
    plan = make_plan(dispatch(["cus_1", "cus_2", "cus_3", "cus_9", "cus_missing"]), profiles)
    assert [u.customer_ids for u in plan.units] == [("cus_1",)]
    assert plan.units[0].kind is UnitKind.PUSH
    assert {c: s.status for c, s in plan.skipped.items()} == {
        "cus_2": RecipientStatus.SKIPPED_UNREACHABLE,
        "cus_3": RecipientStatus.SKIPPED_NO_CONSENT,
        "cus_9": RecipientStatus.SKIPPED_UNREACHABLE,
        "cus_missing": RecipientStatus.SKIPPED_UNREACHABLE,
    }


def test_retry_keys_are_stable_uuids_per_unit() -> None:
    key = retry_key("scn#1#run", "m0000")
    assert key == retry_key("scn#1#run", "m0000")
    assert key != retry_key("scn#1#run", "m0001")
    assert key != retry_key("scn#1#run2", "m0000")
    assert len(key) == 36 and key.count("-") == 4


# --- LINE's answers -------------------------------------------------------------------------------


def body(message: str, **extra: Any) -> bytes:
    return json.dumps({"message": message, **extra}).encode()


def test_409_is_sent() -> None:
    result = classify_error(409, body("The retry key is already accepted"), {"x-line-request-id": "r1"})
    assert result.status is UnitStatus.SENT and result.line_request_id == "r1"


def test_monthly_limit_is_deferred() -> None:
    result = classify_error(429, body("You have reached your monthly limit."), {})
    assert result.status is UnitStatus.DEFERRED and result.monthly_limit


@pytest.mark.parametrize("status", [429, 500, 502, 503, 0])
def test_rate_limits_server_errors_and_no_answer_are_retried(status: int) -> None:
    result = classify_error(status, body("Too many requests") if status == 429 else b"", None)
    assert result.status is UnitStatus.RETRY and not result.monthly_limit


def test_401_is_retried_with_a_fresh_token() -> None:
    result = classify_error(401, body("Authentication failed"), None)
    assert result.status is UnitStatus.RETRY and result.unauthorised


@pytest.mark.parametrize("status", [400, 403, 404, 413])
def test_other_4xx_fail_for_good_with_lines_message(status: int) -> None:
    details = [{"message": "Length must be between 0 and 5000", "property": "messages[0].text"}]
    result = classify_error(status, body("The request body has 1 error(s)", details=details), None)
    assert result.status is UnitStatus.FAILED
    assert result.reason == (
        f"{status} The request body has 1 error(s) (messages[0].text: Length must be between 0 and 5000)"
    )


def test_reasons_never_carry_a_line_user_id() -> None:
    assert "U0123" not in scrub(f"bad recipient U{'0123456789abcdef' * 2}")


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    sender = LineSender(None, None, None, retry_base_seconds=2)  # type: ignore[arg-type]
    for count, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 5: (16, 32), 30: (300, 600)}.items():
        delays = {sender._backoff(count) for _ in range(50)}
        assert all(low <= d <= high for d in delays), (count, delays)


# --- the lazy SDK import --------------------------------------------------------------------------


def run_python(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, timeout=120
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_sender_loads_only_the_sdk_modules_it_uses() -> None:
    result = run_python(
        """
        import json, sys
        import cems.line.sender
        from cems.line.api import is_lazy
        print(json.dumps({
            "lazy": is_lazy("linebot.v3.messaging"),
            "heavy": sorted(m for m in ("aiohttp", "requests", "linebot.api", "linebot.v3.webhooks",
                                        "linebot.v3.messaging.api.async_messaging_api") if m in sys.modules),
            "models": len([m for m in sys.modules if m.startswith("linebot.v3.messaging.models.")]),
        }))
        """
    )
    assert result["lazy"] is True
    assert result["heavy"] == []
    assert result["models"] < 60  # of ~200


def test_the_lazy_packages_still_give_everything_else_the_whole_sdk() -> None:
    result = run_python(
        """
        import json, warnings
        warnings.simplefilter("ignore")
        import cems.line.api
        from linebot.v3.messaging import MessagingApi, TextMessage, ApiException, Configuration
        from linebot.v3.messaging.models import Message
        from linebot.v3 import WebhookParser
        from linebot.v3.webhooks import MessageEvent
        import linebot
        import linebot.v3.messaging as messaging
        from linebot.v3.messaging import *  # noqa: F403
        try:
            linebot.no_such_name
            missing = False
        except AttributeError:
            missing = True
        print(json.dumps({
            "message": type(Message.from_dict({"type": "text", "text": "x"})).__name__,
            "same": TextMessage is messaging.models.TextMessage,
            "version": linebot.__version__,
            "legacy": linebot.LineBotApi.__name__,
            "star": "PushMessageRequest" in dir(),
            "missing": missing,
        }))
        """
    )
    assert result["message"] == "TextMessage"
    assert result["same"] and result["star"] and result["missing"]
    assert result["legacy"] == "LineBotApi" and result["version"].startswith("3.")


def test_the_shim_leaves_an_already_imported_sdk_alone() -> None:
    result = run_python(
        """
        import json, warnings
        warnings.simplefilter("ignore")
        import linebot.v3.messaging
        import cems.line.api
        print(json.dumps({"lazy": cems.line.api.is_lazy("linebot.v3.messaging")}))
        """
    )
    assert result == {"lazy": False}
