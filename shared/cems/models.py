"""Pydantic models of what CEMS receives and keeps: Segment messages, stored events, profiles, sites."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
)

from cems.config import MAX_MESSAGE_ID_LENGTH
from cems.topics import TopicState


def _id_to_str(value: Any) -> Any:
    # Segment clients send numeric user ids as numbers; Segment stores them as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# The times a message may carry. Outside them a time is a mistake (or an attack), and near Python's
# own limits (years 1 and 9999) converting an offset to UTC or correcting a client's clock skew would
# overflow: inside them, every sum CEMS makes of two such times and a retention stays representable.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside 1970-01-01 .. 2199-12-31 (UTC)") from None
    if not EARLIEST_TIME <= value < LATEST_TIME:
        raise ValueError("the time is outside 1970-01-01 .. 2199-12-31 (UTC)")
    return value


Identifier = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=255)]
BoughtId = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=128)]


class MessageType(StrEnum):
    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    ALIAS = "alias"
    GROUP = "group"


class SegmentMessage(BaseModel):
    """One message of the Segment spec, as a client sends it (camelCase on the wire)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", str_strip_whitespace=False)

    type: MessageType
    message_id: str | None = Field(
        default=None, alias="messageId", min_length=1, max_length=MAX_MESSAGE_ID_LENGTH
    )
    anonymous_id: Identifier | None = Field(default=None, alias="anonymousId")
    user_id: Identifier | None = Field(default=None, alias="userId")
    previous_id: Identifier | None = Field(default=None, alias="previousId")
    group_id: Identifier | None = Field(default=None, alias="groupId")
    event: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    # page and screen calls may name the page's category (Segment spec).
    category: str | None = Field(default=None, max_length=200)
    timestamp: datetime | None = None
    original_timestamp: datetime | None = Field(default=None, alias="originalTimestamp")
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    write_key: str | None = Field(default=None, alias="writeKey")
    # Internal: set only by the LINE webhook from a signed LINE event. The /v1 parser refuses it
    # (segment.INTERNAL_FIELDS), so a site can never claim a LINE user id.
    line_user_id: Identifier | None = Field(default=None, alias="lineUserId")

    @field_validator("timestamp", "original_timestamp", "sent_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware_utc(value)

    def missing_required_field(self) -> tuple[str, str] | None:
        """The wire name of a field this message type needs but lacks, with a plain-words reason."""
        if self.type is MessageType.ALIAS:
            if self.previous_id is None:
                return "previousId", "alias needs previousId (the id being merged)"
            if self.user_id is None:
                return "userId", "alias needs userId"
        elif self.user_id is None and self.anonymous_id is None:
            return "userId", "every message needs userId or anonymousId"
        if self.type is MessageType.TRACK and self.event is None:
            return "event", "track needs event (the event name)"
        if self.type is MessageType.GROUP and self.group_id is None:
            return "groupId", "group needs groupId"
        return None


# A trillion (yen or any currency unit): more than any order; bounded so sums stay exact (see below).
MAX_AMOUNT = Decimal(10) ** 12
MAX_ORDER_PRODUCTS = 500


# Cold start: a model used on some requests only (an order, a LINE link) is built on its first use
# (defer_build), not at every function's init; it validates the same either way.
class OrderProduct(BaseModel):
    """A product line of a Segment e-commerce event."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    # At most 128 characters: they are kept in the profile's purchase sets (cems.profiles).
    product_id: BoughtId | None = None
    sku: BoughtId | None = None
    name: str | None = None
    # Bounded so that a whole order's sum stays exact within DynamoDB's 38 digits (see OrderCompleted).
    price: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT, decimal_places=4)
    quantity: int = Field(default=1, ge=0, le=1_000_000)
    category: str | None = Field(default=None, max_length=128)


class OrderCompleted(BaseModel):
    """The properties of `Order Completed` (Segment e-commerce spec v2) that purchase facts use."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    order_id: Identifier | None = None
    total: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT, decimal_places=4)
    revenue: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT, decimal_places=4)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    # 500 lines of at most 10^12 x 10^6 with 4 decimals: at most 26 digits, exact in DynamoDB.
    products: list[OrderProduct] = Field(default_factory=list, max_length=MAX_ORDER_PRODUCTS)

    def amount(self) -> Decimal:
        """What the customer paid: `total`, else `revenue`, else the sum of the product lines."""
        if self.total is not None:
            return self.total
        if self.revenue is not None:
            return self.revenue
        return sum(
            ((p.price or Decimal(0)) * p.quantity for p in self.products),
            start=Decimal(0),
        )


ORDER_COMPLETED = "Order Completed"


class StoredEvent(BaseModel):
    """An event as kept in the Events table: the message after identity resolution and clock fixes."""

    customer_id: str
    site_id: str
    type: MessageType
    message_id: str
    event: str | None = None
    name: str | None = None
    category: str | None = None
    anonymous_id: str | None = None
    user_id: str | None = None
    previous_id: str | None = None
    line_user_id: str | None = None
    # What its sender proved about who it is (cems.trust.Proof); None on events stored before.
    proof: str | None = None
    # A userId the sender gave without proof: kept for analytics, believed in nothing.
    claimed_user_id: str | None = None
    timestamp: datetime
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)


class OrderSummary(BaseModel):
    """One order on a profile, keyed by order id so a re-sent order is counted once."""

    at: datetime
    amount: Decimal
    currency: str | None = None
    # Kept for profiles written before; new orders leave it empty (products_bought etc. hold them).
    product_ids: list[str] = Field(default_factory=list)


class OrderRollup(BaseModel):
    """Orders folded out of a profile's `orders` map (the oldest, once it holds its maximum,
    cems.profiles): still counted in the purchase facts, no longer listed one by one."""

    count: int = 0
    amount: Decimal = Decimal(0)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def plus(self, orders: list[OrderSummary]) -> OrderRollup:
        times = [o.at for o in orders] + [t for t in (self.first_at, self.last_at) if t is not None]
        return OrderRollup(
            count=self.count + len(orders),
            amount=self.amount + sum((o.amount for o in orders), start=Decimal(0)),
            first_at=min(times, default=None),
            last_at=max(times, default=None),
        )


class Channel(StrEnum):
    LINE = "line"
    EMAIL = "email"
    WEB = "web"  # on-site messages shown by the tag (cems.web)


class LineEvent(StrEnum):
    """Names of the events the LINE webhook stores (type track, site id `line`), for scenarios."""

    FOLLOW = "line_follow"
    UNFOLLOW = "line_unfollow"
    MESSAGE = "line_message"
    POSTBACK = "line_postback"
    LINKED = "line_linked"
    # An accountLink that linked nothing: LINE said "failed", or the nonce was unknown, used or expired.
    LINK_FAILED = "line_link_failed"
    # Any other LINE event type (join, unsend, beacon, ...), with its type in properties.line_type.
    OTHER = "line_other"


# Where LINE events come from: the site id on their stored events and de-duplication markers.
LINE_SOURCE_ID = "line"


class EngagementKind(StrEnum):
    """What a customer did with a channel's messages, as a `best` send and the engagement stage
    count it (cems.activity): opened a mail, clicked a link, wrote or tapped back on LINE, saw an
    on-site message."""

    OPEN = "open"
    CLICK = "click"
    REPLY = "reply"
    IMPRESSION = "impression"


class ChannelEngagement(BaseModel):
    """A channel's recent engagement on one profile: per Tokyo day (YYYY-MM-DD), how many of each
    kind. Only the latest days are kept (cems.activity.ENGAGEMENT_DAYS_KEPT), so it stays small."""

    days: dict[str, dict[EngagementKind, int]] = Field(default_factory=dict)


class ChannelState(BaseModel):
    """Whether a customer can be reached on a channel and has agreed to marketing on it."""

    reachable: bool
    consent: bool
    updated_at: datetime
    # Why it changed last, in words an operator can read: "line_follow", "line_unfollow", ...
    reason: str | None = None
    # Who said so: the site (source) whose message set it (`line`, `engage`, a site id).
    source: str | None = None
    # Email: the address (address_hash) the consent was given for. Consent follows the address, not
    # the customer: when the customer's address changes, a consent given for the old one is void.
    address_hash: str | None = None

    def consents_for(self, address: str | None) -> bool:
        """Reachable, with consent that covers `address` (any address when it named none)."""
        if not (self.reachable and self.consent):
            return False
        return self.address_hash is None or (
            address is not None and self.address_hash == address_hash(address)
        )


def address_hash(address: str) -> str:
    """SHA-256 (hex) of the trimmed, lower-cased address: the same mailbox however it was typed."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


class Profile(BaseModel):
    """One customer: identities, traits and purchase facts for segmentation and RFM."""

    customer_id: str
    user_id: str | None = None
    anonymous_ids: set[str] = Field(default_factory=set)
    traits: dict[str, Any] = Field(default_factory=dict)
    orders: dict[str, OrderSummary] = Field(default_factory=dict)
    order_rollup: OrderRollup | None = None
    products_bought: set[str] = Field(default_factory=set)
    skus_bought: set[str] = Field(default_factory=set)
    categories_bought: set[str] = Field(default_factory=set)
    merged_ids: set[str] = Field(default_factory=set)
    merged_into: str | None = None
    line_user_id: str | None = None
    channels: dict[Channel, ChannelState] = Field(default_factory=dict)
    # Recent engagement per channel, folded in as its events arrive (cems.activity), so a `best`
    # send and the engagement stage decide from the profile alone, never from the event history.
    engagement: dict[Channel, ChannelEngagement] = Field(default_factory=dict)
    # The preference centre (cems.topics): each topic the customer chose about, by topic id. Only
    # engage's signed page writes it, and only topics the deployment lists, so it stays small.
    topics: dict[str, TopicState] = Field(default_factory=dict)
    first_seen_at: datetime
    updated_at: datetime
    version: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def purchase_count(self) -> int:
        return len(self.orders) + (self.order_rollup.count if self.order_rollup else 0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def monetary_total(self) -> Decimal:
        rolled = self.order_rollup.amount if self.order_rollup else Decimal(0)
        return sum((o.amount for o in self.orders.values()), start=rolled)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def first_purchase_at(self) -> datetime | None:
        rolled = [self.order_rollup.first_at] if self.order_rollup and self.order_rollup.first_at else []
        return min([*rolled, *(o.at for o in self.orders.values())], default=None)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last_purchase_at(self) -> datetime | None:
        rolled = [self.order_rollup.last_at] if self.order_rollup and self.order_rollup.last_at else []
        return max([*rolled, *(o.at for o in self.orders.values())], default=None)

    def line_contact(self) -> str | None:
        """The LINE user id to send to, or None when LINE is unreachable or lacks consent."""
        state = self.channels.get(Channel.LINE)
        if self.line_user_id and state is not None and state.reachable and state.consent:
            return self.line_user_id
        return None

    def all_customer_ids(self) -> set[str]:
        """This profile's id and every id merged into it: where its events are stored."""
        return {self.customer_id, *self.merged_ids}


class Trust(StrEnum):
    """How far CEMS believes what a request says about who someone is (cems.trust)."""

    # A key that ships in every page of the shop (the tag's write key): it records what anonymous
    # visitors do; a userId it sends counts only with a userHash the shop's server computed.
    PUBLIC = "public"
    # A secret key kept on the shop's server, and CEMS's own signed sources (LINE, engage): believed.
    SERVER = "server"


class Site(BaseModel):
    """A site (source) allowed to send events, as one of its keys names it.

    A site has a public write key (in its pages) and a secret server key; the Sites table holds one
    item per key (cems.sites), and `trust` says which kind of key found this one.
    """

    write_key: str
    site_id: str
    name: str
    origins: list[str] = Field(default_factory=list)
    created_at: datetime
    expires_at: datetime | None = None
    trust: Trust = Trust.PUBLIC
    # The HMAC key of user hashes (cems.trust.user_hash): the shop's server renders
    # HMAC-SHA256(identity_secret, userId) into its pages. On the public key's item only.
    identity_secret: str | None = Field(default=None, repr=False)
    # After a rotation, the previous identity secret keeps verifying until this time.
    previous_identity_secret: str | None = Field(default=None, repr=False)
    previous_identity_secret_until: datetime | None = None

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.origins or origin.rstrip("/") in {o.rstrip("/") for o in self.origins}

    def is_active(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at

    def identity_secrets(self, at: datetime) -> list[str]:
        """The identity secrets a user hash may be made with now: the current one, and the previous
        one during its grace period."""
        secrets = [self.identity_secret] if self.identity_secret else []
        until = self.previous_identity_secret_until
        if self.previous_identity_secret and until is not None and at < until:
            secrets.append(self.previous_identity_secret)
        return secrets


class LineLinkRequest(BaseModel):
    """The body of POST /v1/line/link: the tag on the shop's link page asks to link the signed-in
    customer (userId with its userHash) browsing with this anonymous id to a LINE friend."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)

    anonymous_id: Identifier = Field(alias="anonymousId")
    # LINE's link tokens are short URL-safe strings; anything else is refused before it reaches a URL.
    link_token: str = Field(alias="linkToken", min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._~+/=-]+$")
    user_id: Identifier | None = Field(default=None, alias="userId")
    user_hash: str | None = Field(default=None, alias="userHash", max_length=128)
    write_key: str | None = Field(default=None, alias="writeKey")
