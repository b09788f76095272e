"""SES v2 adapter: SendEmail with a raw MIME message, its answer or error classified into an outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
)

from cems.email.sender import SesResult, Status, scrub
from cems.ports import MessageTag

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

# SES error codes that mean "not now": the claim is released and the dispatch tried again.
RETRYABLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "SendingPausedException",
        # The operator's to fix (account, IAM, credentials), not the mail's fault: the dispatch waits,
        # then in the DLQ, and a redrive after the fix sends it.
        "AccountSuspendedException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "Throttling",
        "ThrottlingException",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestTimeout",
    }
)
# The SES client's own settings: no retries of its own (a retried call could send a mail twice; the
# dispatch's retries go through SQS), and a read time-out long enough for SES on a bad day.
SES_CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=10,
    retries={"mode": "standard", "total_max_attempts": 1},
    tcp_keepalive=True,
)


class SesGateway:
    """SES v2 SendEmail with a raw MIME message, classified into an outcome. The client is made on
    the first send (cold start) and makes no retries of its own: a retried call could send twice."""

    def __init__(self, client_factory: Callable[[], SESV2Client]) -> None:
        self._client_factory = client_factory
        self._client: SESV2Client | None = None

    def client(self) -> SESV2Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def send(
        self,
        from_address: str,
        to_address: str,
        raw: bytes,
        configuration_set: str | None,
        tags: Sequence[MessageTag],
    ) -> SesResult:
        request: dict[str, Any] = {
            "FromEmailAddress": from_address,
            "Destination": {"ToAddresses": [to_address]},
            # Raw, so that our headers (List-Unsubscribe, ...) and parts go out exactly as composed.
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": list(tags),
        }
        if configuration_set:
            request["ConfigurationSetName"] = configuration_set
        try:
            answer = self.client().send_email(**request)
        except ClientError as exc:
            return classify_error(exc)
        except (ConnectTimeoutError, EndpointConnectionError, ProxyConnectionError) as exc:
            # The request never reached SES: safe to try again.
            return SesResult(Status.RETRY, error_code=type(exc).__name__, reason="could not connect to SES")
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            # SES may have accepted it before the answer was lost: not sent again (at most once).
            return SesResult(Status.UNKNOWN, error_code=type(exc).__name__, reason="no answer from SES")
        except ParamValidationError as exc:
            # The SDK refused the request before sending it: the same request never passes.
            return SesResult(Status.FAILED, error_code=type(exc).__name__, reason=scrub(str(exc)))
        except (NoCredentialsError, PartialCredentialsError) as exc:
            return SesResult(Status.RETRY, error_code=type(exc).__name__, reason="no AWS credentials")
        except BotoCoreError as exc:
            # Anything else the SDK raises may come after the request left: at most once.
            return SesResult(Status.UNKNOWN, error_code=type(exc).__name__, reason=scrub(str(exc)))
        return SesResult(Status.SENT, message_id=answer.get("MessageId"))


def classify_error(exc: ClientError) -> SesResult:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    reason = scrub(f"{code}: {error.get('Message', '')}")
    if code in RETRYABLE_CODES or http_status >= 500 or http_status == 429:
        return SesResult(Status.RETRY, error_code=code, reason=reason)
    return SesResult(Status.FAILED, error_code=code, reason=reason)
