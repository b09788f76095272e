"""Settings read from the environment: table names, limits and retention, one place for every name."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    customers_table: str
    events_table: str
    sites_table: str
    idempotency_table: str
    event_retention_days: int
    # How long a messageId is remembered for de-duplication; client retries come within minutes,
    # analytics-python retries for at most a few hours, so a week is generous.
    dedupe_days: int
    site_cache_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            customers_table=env.get("CUSTOMERS_TABLE", "CustomersTable"),
            events_table=env.get("EVENTS_TABLE", "EventsTable"),
            sites_table=env.get("SITES_TABLE", "SitesTable"),
            idempotency_table=env.get("IDEMPOTENCY_TABLE", "IdempotencyTable"),
            event_retention_days=int(env.get("CEMS_EVENT_RETENTION_DAYS", "395")),
            dedupe_days=int(env.get("CEMS_DEDUPE_DAYS", "7")),
            site_cache_seconds=float(env.get("CEMS_SITE_CACHE_SECONDS", "60")),
        )


# Segment's documented limits (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/)
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_ID_LENGTH = 100
# DynamoDB TransactWriteItems accepts at most 100 actions.
MAX_TRANSACTION_ACTIONS = 100
