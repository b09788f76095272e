"""The scenario engine's dispatch sink on SQS: each dispatch to its channel's queue (LineSendQueue,
EmailSendQueue, ...), as that channel's plugin writes the message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cems.channels.plugin import LinkTracker
from cems.channels.registry import plugin
from cems.models import Channel
from cems.ports import SinkResult
from cems.scenario.engine import Dispatch

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class QueueDispatchSink:
    """A dispatch goes to the queue of the channel it is sent on; each sender sends a dispatch key
    once. Its fallbacks are carried, not queued: the engine chose the first channel because it was
    reachable when it decided. With a link tracker, a channel whose plugin rewrites links before
    queueing (LINE) sends them through the click tracker, unless the scenario turned click tracking
    off. A channel without a queue configured, or a dispatch without its message, is `unsupported`."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_urls: Mapping[Channel, str],
        links: LinkTracker | None = None,
    ) -> None:
        self.sqs = sqs
        self.queue_urls = dict(queue_urls)
        self.links = links

    def send(self, dispatch: Dispatch) -> SinkResult:
        url = self.queue_urls.get(dispatch.channel)
        if not url or dispatch.channel not in dispatch.messages:
            return "unsupported"
        body = plugin(dispatch.channel).queue_body(dispatch, self.links)
        self.sqs.send_message(QueueUrl=url, MessageBody=body)
        return "enqueued"
