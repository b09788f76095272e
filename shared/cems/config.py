"""Fixed limits: Segment's documented sizes and DynamoDB's transaction size (settings: cems.settings)."""

from __future__ import annotations

# Segment's documented limits (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/)
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_ID_LENGTH = 100
# DynamoDB TransactWriteItems accepts at most 100 actions.
MAX_TRANSACTION_ACTIONS = 100
