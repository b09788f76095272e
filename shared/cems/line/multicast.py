"""A batch of decisions (a broadcast page) as queued dispatches: identical LINE content shared.

The engine renders one dispatch per customer. `group` finds, among the LINE dispatches of one batch,
those of one scenario, version, step and variant whose rendered messages (and notificationDisabled)
are identical, and makes them ONE queued LINE dispatch of up to 500 recipients, which the sender
(cems.line.sender) sends as one multicast. Both dispatch sinks (QueueDispatchSink and the tests'
RecordingDispatchSink) group through this one function, so they group alike.

The shared dispatch's idempotency key is made from the batch, the step and a digest of the content
(`<batch>#<step>#<digest>#0000`), never from who is in it. A redone batch (the caller gives the same
`batch` again) therefore gets the same key for the same content, and the sender's frozen plan for
that key sends nobody twice, even when the redo has fewer recipients than the first attempt (those
whose journeys were written meanwhile).

One content of one batch is ONE dispatch, never chunks: a batch holding more than 500 recipients of
one shared content is refused (ValueError). A broadcast page holds at most 500 profiles
(cems.scenario.broadcast.PAGE_SIZE, CustomerStore.scan_profile_page), so a page never is; a page
done again holding profiles created in its range since enrols those under batches of their own, of
at most 500 (cems.scenario.broadcast.page_split). This is what makes a redo exact in both
directions. Were a content cut into chunks by position, a redo with more recipients (a profile
created in the page's key range since) would open a chunk key the first attempt never had, and a
redo with fewer would move customers between chunk keys, so a customer sent under one chunk's key
could be planned again under another's. With one key per content of a batch,
every recipient of that content, on every attempt, is under that one key. So the dispatch says so
(`LineDispatch.sole_chunk`), and the sender may add to the key's frozen plan a customer it never had
(a redo's new profile): that customer was sent under no other key of this content.

What stays inexact: content that renders differently for one customer between an attempt and its
redo (a profile field changed in between) has another digest, so another key, and the customer gets
both renderings. Keying such content by customer instead does not help: whether a dispatch is a
group of one depends on who else the batch holds, which a redo changes (fewer or more recipients),
so a customer keyed by content on one attempt and by customer on the other would be sent twice in
the common case (a redo with fewer recipients) to close a rare one. docs/line-dispatch.md says more.

A dispatch stays on its own (its own key, queued as `DispatchSink.send` queues it) when it is not on
LINE, carries personalised LINE content, or has links the click tracker must track per customer (the
scenario's conditions use the link-click event: `Dispatch.per_customer_clicks`). Content that renders
differently per customer (a name in the text) is a group of one: one push, as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from cems.channels.registry import plugin
from cems.line.dispatch import MAX_MULTICAST_RECIPIENTS, LineDispatch, ShortLink
from cems.line.links import SharedLinkTracker, carried, has_tracked_links, text_tracker, track_links
from cems.models import Channel

if TYPE_CHECKING:
    from cems.channels.plugin import LinkTracker
    from cems.scenario.engine import Dispatch

# LineDispatch.idempotency_key's limit.
MAX_KEY_LENGTH = 256
# Hex digits of the content digest in a shared key: 80 bits, no two contents of one step collide.
DIGEST_CHARS = 20


@dataclass(frozen=True)
class Share:
    """Dispatches of a batch (their positions in it) that go as one queued dispatch: shared under
    `key`, or (key None) one dispatch going as itself."""

    positions: tuple[int, ...]
    key: str | None = None


def shareable(dispatch: Dispatch) -> bool:
    """Whether the dispatch's LINE content may go to others in the same call: it is LINE, nothing in
    it is personal (no per-recipient content, no link tracked per customer)."""
    if dispatch.channel is not Channel.LINE:
        return False
    line = dispatch.messages.get(Channel.LINE)
    if not isinstance(line, LineDispatch) or line.personalised or line.test or not line.messages:
        return False
    per_customer_links = dispatch.track_clicks and dispatch.per_customer_clicks
    return not (per_customer_links and has_tracked_links(line.messages))


def content_digest(dispatch: Dispatch) -> str:
    """SHA-256 of what makes two dispatches share a call: the report cell and the rendered content."""
    line: LineDispatch = dispatch.messages[Channel.LINE]
    content: dict[str, Any] = {
        "scenario": dispatch.scenario_id,
        "version": dispatch.version,
        "step": dispatch.step_id,
        "variant": dispatch.variant,
        "messages": line.messages,
        "quiet": line.notification_disabled,
        # Tracked or not changes the bytes LINE gets (the links), so it is content too.
        "track_clicks": dispatch.track_clicks,
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def shared_key(batch: str, step_id: str, digest: str, chunk: int) -> str:
    """`<batch>#<step>#<digest>#<chunk>`, the batch and step hashed when that would be too long.
    `group` makes one chunk per content, `0000` (the number stays in the key, whose form the
    Deliveries table and the click tokens of dispatches already sent carry)."""
    tail = f"#{digest[:DIGEST_CHARS]}#{chunk:04d}"
    head = f"{batch}#{step_id}"
    if len(head) + len(tail) > MAX_KEY_LENGTH:
        head = "h" + hashlib.sha256(head.encode("utf-8")).hexdigest()
    return head + tail


def group(dispatches: Sequence[Dispatch], batch: str) -> list[Share]:
    """The queued dispatches a batch becomes, in the order of their first dispatch: each shareable
    content's dispatches as one, under its shared key, every other dispatch alone. ValueError for a
    batch holding more than 500 customers of one shareable content (see the module's docstring)."""
    if not batch:
        raise ValueError("a batch needs a name (the same on a redo of the same batch)")
    shares: list[Share | None] = []
    by_content: dict[str, list[int]] = {}
    customers: dict[str, set[str]] = {}
    first_slot: dict[str, int] = {}
    for position, dispatch in enumerate(dispatches):
        if not shareable(dispatch):
            shares.append(Share((position,)))
            continue
        digest = content_digest(dispatch)
        if digest not in by_content:
            by_content[digest] = []
            customers[digest] = set()
            first_slot[digest] = len(shares)
            shares.append(None)  # filled below, where the content first appeared
        by_content[digest].append(position)
        customers[digest].add(dispatch.customer_id)
        if len(customers[digest]) > MAX_MULTICAST_RECIPIENTS:
            raise ValueError(
                f"batch {batch!r} holds more than {MAX_MULTICAST_RECIPIENTS} customers of one shared "
                "content: a batch is at most one multicast per content (a broadcast page holds at most "
                f"{MAX_MULTICAST_RECIPIENTS} profiles), so a redo finds every customer under one key"
            )
    placed = {
        first_slot[digest]: Share(
            tuple(positions), shared_key(batch, dispatches[positions[0]].step_id, digest, 0)
        )
        for digest, positions in by_content.items()
    }
    return [placed[slot] if share is None else share for slot, share in enumerate(shares)]


def shared_dispatch(dispatches: Sequence[Dispatch], share: Share) -> LineDispatch:
    """The one LINE dispatch of a share: the first dispatch's content to every customer in it."""
    assert share.key is not None
    first: LineDispatch = dispatches[share.positions[0]].messages[Channel.LINE]
    return first.model_copy(
        update={
            "idempotency_key": share.key,
            # Customers in batch order (LineDispatch drops a repeated one).
            "recipients": list(dict.fromkeys(dispatches[p].customer_id for p in share.positions)),
            # Every customer of this content in the batch (`group` makes no chunks).
            "sole_chunk": True,
        }
    )


@dataclass(frozen=True)
class Queued:
    """One SQS message of a batch: its channel, its body, and the batch's dispatches it carries."""

    channel: Channel
    body: str
    positions: tuple[int, ...]


def queue_bodies(
    dispatches: Sequence[Dispatch], batch: str, links: LinkTracker | None, queues: frozenset[Channel]
) -> list[Queued]:
    """What a sink puts on its queues for a batch (`group`), each body as the channel's plugin writes
    it; a dispatch whose channel has no queue in `queues`, or without its message, is left out (the
    sink answers `unsupported` for it). A shared dispatch's links go through the tracker's `shared`
    tracking (no customer in the link), when the tracker has it and the scenario tracks clicks."""
    out: list[Queued] = []
    for share in group(dispatches, batch):
        first = dispatches[share.positions[0]]
        if first.channel not in queues or first.channel not in first.messages:
            continue
        if share.key is None:
            body = plugin(first.channel).queue_body(first, links)
        else:
            line = shared_dispatch(dispatches, share)
            if isinstance(links, SharedLinkTracker) and first.track_clicks:
                tracked = partial(links.shared, first, share.key)
                # Text URLs as the shared dispatch's short links: one stored item per link of the
                # shared dispatch, whatever the number of recipients.
                made: dict[str, ShortLink] = {}
                messages = track_links(line.messages, tracked, text_tracker(links, first, share.key, made))
                line = line.model_copy(update={"messages": messages, "short_links": carried(made, messages)})
            body = line.to_sqs_body()
        out.append(Queued(first.channel, body, share.positions))
    return out
