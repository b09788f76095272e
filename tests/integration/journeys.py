"""What the scenario-engine integration tests share: LINE customers, stored events, drained queues."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from cems import clock
from cems.adapters.dynamodb.customers import CustomerStore, EventStore
from cems.models import ChannelState, MessageType, Profile, StoredEvent


def line_user_id(customer_id: str) -> str:
    """A LINE user id of the right shape, derived from the customer id."""
    return "U" + customer_id.encode().hex().ljust(32, "0")[:32]


def put_customer(
    customers: CustomerStore, customer_id: str, at: datetime, *, line: bool = True, reachable: bool = True
) -> str:
    """A profile (first seen 30 days before `at`), with a consenting LINE contact unless `line` is off."""
    profile = Profile(
        customer_id=customer_id,
        line_user_id=line_user_id(customer_id) if line else None,
        channels={"line": ChannelState(reachable=reachable, consent=True, updated_at=at)} if line else {},
        first_seen_at=at - timedelta(days=30),
        updated_at=at,
    )
    customers.client.put_item(TableName=customers.table_name, Item=customers.profile_item(profile))
    return customer_id


def put_track_event(
    events: EventStore,
    customer_id: str,
    event_name: str,
    message_id: str,
    site_id: str = "shop",
    **properties: Any,
) -> StoredEvent:
    """A track event stored now (by CEMS's clock) as collect stores it."""
    at = clock.now()
    event = StoredEvent(
        customer_id=customer_id,
        site_id=site_id,
        type=MessageType.TRACK,
        message_id=message_id,
        event=event_name,
        timestamp=at,
        received_at=at,
        properties=properties,
    )
    events.client.transact_write_items(TransactItems=[events.event_action(event)])
    return event


def drain_queue(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message body on the queue (JSON), deleted as read."""
    out: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return out
