"""What a channel brings to CEMS (its plugin): who it reaches, how a send step's content becomes its
queue message, its caps' defaults, its queue and its sender. Each channel's package defines one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cems.models import Channel, Profile

if TYPE_CHECKING:
    from cems.scenario.engine import Dispatch
    from cems.scenario.model import SendStep
    from cems.scenario.problems import Path, Problem

# Where a dispatch's links go: (the dispatch, the original URL) -> the click-tracker URL.
LinkTracker = Callable[["Dispatch", str], str]


@dataclass(frozen=True)
class SendContext:
    """What a rendered message carries besides its content: whose send it is and where it comes from."""

    key: str  # the dispatch's idempotency key
    customer_id: str
    scenario_id: str
    version: int
    step_id: str
    variant: str | None = None
    track_clicks: bool = True
    track_opens: bool = True
    # The scenario's topic (cems.topics): a mail's unsubscribe link offers to leave just it.
    topic: str | None = None


@dataclass(frozen=True)
class ChannelPlugin:
    """One channel's rules, looked up by the engine, caps, conditions, checks, test sends and wiring
    (`cems.channels.registry`), which never name a channel themselves."""

    channel: Channel
    # Its name in messages to people ("LINE", "email").
    title: str
    # Reachable with consent now: the engine sends only then, and `reachable` conditions ask it.
    reachable: Callable[[Profile], bool]
    # The profile reachable with consent on this channel (the simulator's and test sends' sample
    # customer is reachable on every channel).
    make_reachable: Callable[[Profile], Profile]
    # The stored event by which a customer leaves the channel at once (LINE's unfollow), if any: a
    # journey whose next sends are all on this channel then ends (`opted_out:<channel>`).
    opt_out_event: str | None
    # The type of the send step's content field, which is named after the channel (the scenario
    # model and its JSON Schema are built from it). A function: the type's module loads the scenario
    # model's base types, which import the registry.
    content_type: Callable[[], Any]
    # What that field must hold, for validation messages: (Japanese, English).
    content_label: tuple[str, str]
    # The problems of that field's JSON value, each at its path (a value of the wrong shape is left
    # to the field check): LINE's limits, Liquid that does not parse, ...
    content_problems: Callable[[Any, Path], list[Problem]]
    # The step's content rendered for one customer (RenderError, ValidationError or ValueError when
    # it cannot be): the message the engine's Dispatch carries for this channel.
    render: Callable[[SendStep, dict[str, Any], SendContext], Any]
    # The SQS body of a dispatch on this channel (links through the tracker when one is given): a
    # `dispatch_model` (LineDispatch, EmailDispatch), which is what the sender reads.
    queue_body: Callable[[Dispatch, LinkTracker | None], str]
    dispatch_model: type[BaseModel]
    # One short line of a rendered message, for the simulator's timeline and test-send previews.
    summary: Callable[[Any], str]
    # A staff member's address on this channel for a test send (`--to <channel>:<address>`): the
    # address as the sender takes it, ValueError (without the value) when malformed.
    test_address: Callable[[str], str]
    # How to write such an address in `--to`, for the CLI's help and refusals.
    test_address_help: str
    # The rendered message as a test send to `address`: the same queue message, marked as a test.
    test_message: Callable[[Any, SendContext, SendStep, str], Any]
    # `Queues` setting (cems.settings) of the queue its dispatches go to, and the function in
    # functions/ that sends them (also its builder's name in cems.wiring).
    queue: str
    sender: str
    # The queue's logical id in template.yaml (its `<id>Url` output names it on a stage).
    queue_resource: str
    # Its name on reports, charts and diagrams, Japanese first ("メール Email").
    label: str = ""
    # What one count of `sent` (IMP) means on this channel: nothing later is known for every channel.
    imp_definition: str = ""
    # The figures this channel cannot report per message (a report figure name -> why not): the
    # report shows such a figure as None with this reason, never as 0.
    not_measured: Mapping[str, str] = field(default_factory=dict)
    # The fields of a rendered message (`render`'s) that are its content, for an operator's preview;
    # empty: the whole message (its bookkeeping fields, a key and the sample customer, say nothing).
    preview_fields: tuple[str, ...] = ()
    # A link the staff member opens to see a test message (`test_message`'s dispatch), for channels
    # whose test is not delivered to an address but looked at where it shows (web: the shop's page
    # with a preview token); None for the others.
    test_link: Callable[[Any], str | None] = field(default=lambda dispatch: None)
