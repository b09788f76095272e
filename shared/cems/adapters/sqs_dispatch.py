"""The scenario engine's dispatch sink on SQS: LINE dispatches to LineSendQueue, mail to EmailSendQueue."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from cems.line.links import track_links
from cems.ports import SinkResult
from cems.scenario.engine import Dispatch
from cems.scenario.runner import LinkTracker, email_dispatch

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class QueueDispatchSink:
    """LINE dispatches go to LineSendQueue and email dispatches to EmailSendQueue; each sender sends
    a dispatch key once. `line_then_email` goes to LINE: the engine chose it because LINE was
    reachable when it decided (email is the fallback for a customer LINE cannot reach at that time).
    With a link tracker, the http(s) links of LINE messages go through the click tracker (unless
    the scenario turned click tracking off); email links are rewritten by the email sender."""

    def __init__(
        self,
        sqs: SQSClient,
        line_queue_url: str,
        email_queue_url: str = "",
        links: LinkTracker | None = None,
    ) -> None:
        if not line_queue_url:
            raise ValueError("LINE_SEND_QUEUE_URL is not set")
        self.sqs = sqs
        self.line_queue_url = line_queue_url
        self.email_queue_url = email_queue_url
        self.links = links

    def send(self, dispatch: Dispatch) -> SinkResult:
        if dispatch.channel == "email":
            if dispatch.email is None or not self.email_queue_url:
                return "unsupported"
            body = email_dispatch(dispatch).to_sqs_body()
            self.sqs.send_message(QueueUrl=self.email_queue_url, MessageBody=body)
            return "enqueued"
        if dispatch.line is None:
            return "unsupported"
        line = dispatch.line
        if self.links is not None and dispatch.track_clicks:
            tracked = partial(self.links, dispatch)
            line = line.model_copy(
                update={
                    "messages": track_links(line.messages, tracked),
                    "personalised": {c: track_links(m, tracked) for c, m in line.personalised.items()},
                }
            )
        self.sqs.send_message(QueueUrl=self.line_queue_url, MessageBody=line.to_sqs_body())
        return "enqueued"
