"""Email sending rules without AWS: how SES's answers are classified, what is scrubbed from them,
and the backoff."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ProxyConnectionError,
    ReadTimeoutError,
)
from cems.adapters.ses import SES_CLIENT_CONFIG, SesGateway, classify_error
from cems.email.config import EmailSettings
from cems.email.sender import EmailSender, Status, scrub, valid_address

SETTINGS = EmailSettings(
    from_address="shop@example.jp",
    from_name="茶寮みどり",
    postal_address="京都",
    contact="075-000-0000",
    configuration_set=None,
    engage_base_url="https://engage.example.jp",
    retry_base_seconds=2.0,
)


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        "SendEmail",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("TooManyRequestsException", 429, Status.RETRY),
        ("LimitExceededException", 400, Status.RETRY),
        ("SendingPausedException", 400, Status.RETRY),
        ("InternalFailure", 500, Status.RETRY),
        ("SomethingNew", 503, Status.RETRY),
        ("MessageRejected", 400, Status.FAILED),
        ("MailFromDomainNotVerifiedException", 400, Status.FAILED),
        ("BadRequestException", 400, Status.FAILED),
        ("NotFoundException", 404, Status.FAILED),
        ("AccessDeniedException", 403, Status.RETRY),  # IAM: the operator's to fix, then redrive
        ("AccountSuspendedException", 400, Status.RETRY),
    ],
)
def test_ses_errors_are_retried_or_failed(code: str, status: int, expected: Status) -> None:
    result = classify_error(client_error(code, status, "x"))
    assert (result.status, result.error_code) == (expected, code)


def test_addresses_are_scrubbed_from_ses_text() -> None:
    text = (
        "Email address is not verified. The following identities failed the check in region "
        "AP-NORTHEAST-1: sato.hanako+tea@example.com, <news@shop.example.jp>"
    )
    assert "@" not in scrub(text)
    assert scrub(text).endswith("<address>, <<address>>")
    assert "@" not in (classify_error(client_error("MessageRejected", 400, text)).reason or "")


class _Client:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.requests: list[dict[str, Any]] = []

    def send_email(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return {"MessageId": "0106019-abc"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, Status.SENT),
        (ConnectTimeoutError(endpoint_url="https://email"), Status.RETRY),
        (EndpointConnectionError(endpoint_url="https://email"), Status.RETRY),
        # SES may have taken it: at most once.
        (ReadTimeoutError(endpoint_url="https://email"), Status.UNKNOWN),
        (ConnectionClosedError(endpoint_url="https://email"), Status.UNKNOWN),
        (client_error("MessageRejected", 400), Status.FAILED),
        (ParamValidationError(report="Invalid type for parameter"), Status.FAILED),
        (NoCredentialsError(), Status.RETRY),
        (ProxyConnectionError(proxy_url="http://proxy", error="refused"), Status.RETRY),
        (HTTPClientError(error="connection reset"), Status.UNKNOWN),
    ],
)
def test_the_gateway_classifies_every_answer(error: Exception | None, expected: Status) -> None:
    client = _Client(error)
    gateway = SesGateway(lambda: client)  # type: ignore[arg-type, return-value]
    result = gateway.send("shop@example.jp", "a@example.com", b"raw", "cems-dev", [])
    assert result.status is expected
    [request] = client.requests
    assert request["Content"] == {"Raw": {"Data": b"raw"}}
    assert request["ConfigurationSetName"] == "cems-dev"
    assert request["Destination"] == {"ToAddresses": ["a@example.com"]}


def test_the_ses_client_never_retries_by_itself() -> None:
    assert SES_CLIENT_CONFIG.retries == {"mode": "standard", "total_max_attempts": 1}


def test_backoff_grows_and_is_capped() -> None:
    sender = EmailSender(SETTINGS, *([None] * 5), lambda d: None)  # type: ignore[arg-type]
    for receive_count, (low, high) in {1: (1, 2), 2: (2, 4), 4: (8, 16), 30: (300, 600)}.items():
        delays = {sender._backoff(receive_count) for _ in range(50)}
        assert min(delays) >= low and max(delays) <= high


def test_addresses() -> None:
    assert valid_address("sato@example.com")
    assert valid_address("sato.hanako+tea@mail.example.co.jp")
    assert valid_address("sato@xn--r8jz45g.jp")
    bad_ones = ("", "sato", "sato@", "@example.com", "sato@localhost", "a b@example.com", "a@b@c.jp")
    for bad in (*bad_ones, "田中@example.jp", "sato@例え.jp"):
        assert not valid_address(bad), bad
