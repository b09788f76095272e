"""The scenario engine's dispatch sink on SQS: each dispatch to its channel's queue (LineSendQueue,
EmailSendQueue, ...), as that channel's plugin writes the message; a batch's identical LINE content
shared by multicast (cems.line.multicast), sent with SendMessageBatch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from cems.channels.plugin import LinkTracker
from cems.channels.registry import plugin
from cems.line.multicast import Queued, queue_bodies
from cems.models import Channel
from cems.ports import ServiceUnavailable, SinkResult
from cems.scenario.engine import Dispatch

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

# SendMessageBatch: at most ten messages, and at most 256 KiB of bodies in all.
SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 262_144
# A batch's entries SQS did not take are sent again this many times before the batch is refused.
BATCH_ATTEMPTS = 3


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

    def send_batch(self, dispatches: Sequence[Dispatch], batch: str) -> list[SinkResult]:
        """The batch's dispatches, identical LINE content shared (cems.line.multicast.group), in
        SendMessageBatch calls. All enqueued, or ServiceUnavailable: entries SQS refused are sent
        again, and if some are still refused the caller must not write its journeys (a redo of the
        batch makes the same keys, so what did go out is not sent twice)."""
        configured = frozenset(c for c, url in self.queue_urls.items() if url)
        queued = queue_bodies(dispatches, batch, self.links, configured)
        by_queue: dict[Channel, list[Queued]] = {}
        for item in queued:
            by_queue.setdefault(item.channel, []).append(item)
        for channel, items in by_queue.items():
            self._send_bodies(self.queue_urls[channel], [i.body for i in items])
        results: list[SinkResult] = ["unsupported"] * len(dispatches)
        for item in queued:
            for position in item.positions:
                results[position] = "enqueued"
        return results

    def _send_bodies(self, url: str, bodies: list[str]) -> None:
        for chunk in _packed(bodies):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)
            ]
            for _ in range(BATCH_ATTEMPTS):
                try:
                    answer = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
                except (BotoCoreError, ClientError) as exc:
                    raise ServiceUnavailable(f"dispatches not enqueued: {type(exc).__name__}") from exc
                failed = {f["Id"] for f in answer.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
            if entries:
                raise ServiceUnavailable(f"{len(entries)} dispatch messages not enqueued")


def _packed(bodies: list[str]) -> list[list[str]]:
    """The bodies in SendMessageBatch calls: at most ten each and 256 KiB in all (a body larger than
    that alone is a call of its own, which SQS refuses as `send` would)."""
    calls: list[list[str]] = []
    size = 0
    for body in bodies:
        length = len(body.encode("utf-8"))
        if not calls or len(calls[-1]) >= SQS_BATCH_ENTRIES or size + length > SQS_BATCH_BYTES:
            calls.append([])
            size = 0
        calls[-1].append(body)
        size += length
    return calls
