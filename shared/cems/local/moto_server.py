"""moto in server mode, with DynamoDB made safe for the concurrent requests a local stack serves.

Two changes, both to make moto behave like DynamoDB rather than to add anything:

1. moto's server handles requests on threads, but its DynamoDB backend has no locking: two
   concurrent transactions interleave, and a cancelled one restores table copies taken before it
   started, erasing the other's writes. Every DynamoDB request is serialised here, which gives the
   isolation DynamoDB guarantees (each request sees and leaves a consistent state).
2. moto's `TransactWriteItems` deep-copies every table a transaction touches so it can roll back, so
   each transaction costs time proportional to the table's size and the stack slows as data grows.
   DynamoDB evaluates every condition against the state before the transaction and then applies all
   writes or none; that is done here with an undo log of just the touched items.

If moto's internals ever change shape, the stack logs a warning and keeps moto's own behaviour.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cems.local")

_dynamodb_lock = threading.RLock()


def _serialised(call_action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(call_action)
    def call(self: Any) -> Any:
        with _dynamodb_lock:
            return call_action(self)

    return call


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    actions: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    targets: set[tuple[str, str]] = set()
    for item in transact_items:
        if len(item) != 1:
            raise TransactWriteSingleOpException()
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op["Key"]
        target = (op["TableName"], str(dict(sorted(key.items()))))
        if target in targets:
            raise MultipleTransactionsException()
        targets.add(target)
        actions.append((op_type, op, key))

    # Every condition is checked against the state before the transaction, as DynamoDB does.
    errors: list[tuple[Any, Any, Any]] = []
    for _, op, key in actions:
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        if condition is not None and not get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current):
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            errors.append(("ConditionalCheckFailed", str(ConditionalCheckFailed().message), old))
        else:
            errors.append((None, None, None))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)

    undo: list[tuple[Any, Any, Any, Any]] = []
    try:
        for op_type, op, key in actions:
            table = self.get_table(op["TableName"])
            hash_value, range_value = self.get_keys_value(table, key)
            undo.append(
                (table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value)))
            )
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"])
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key)
            elif op_type == "Update":
                self.update_item(op["TableName"], key, op["UpdateExpression"], names, values)
    except Exception:
        # A write DynamoDB would have refused up front (a bad update expression): undo the others.
        for table, hash_value, range_value, before in reversed(undo):
            holder = table.items[hash_value] if table.range_key_attr is not None else table.items
            slot = range_value if table.range_key_attr is not None else hash_value
            if before is None:
                holder.pop(slot, None)
            else:
                holder[slot] = before
        raise


def patch_moto() -> bool:
    """Applies both changes; returns False (moto unchanged) if moto's internals are not as expected."""
    try:
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.responses import DynamoHandler

        for name in ("get_table", "get_item", "get_keys_value", "put_item", "delete_item", "update_item"):
            getattr(DynamoDBBackend, name)
        original = DynamoHandler.call_action
    except (ImportError, AttributeError) as exc:
        log.warning("moto's DynamoDB is not as expected (%s); concurrent writes may interfere", exc)
        return False
    DynamoHandler.call_action = _serialised(original)  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    return True


# Mail SES accepted (moto keeps it in the server process only), for the local stack's `/_local/email`.
SENT_MAIL_PATH = "/_cems/ses/sent"


def sent_mail() -> list[dict[str, Any]]:
    """Every mail moto's SES accepted, oldest first: id, source, destinations and the raw MIME text
    (or subject and body for Simple content)."""
    from moto.ses.models import RawMessage, ses_backends

    mails: list[dict[str, Any]] = []
    for account_id in list(ses_backends.keys()):
        for region in list(ses_backends[account_id].keys()):
            for message in ses_backends[account_id][region].sent_messages:
                mail: dict[str, Any] = {"id": message.id, "source": message.source, "region": region}
                if isinstance(message, RawMessage):
                    mail.update(destinations=list(message.destinations), raw=message.raw_data)
                else:
                    destinations = getattr(message, "destinations", {})
                    mail.update(
                        destinations=list(destinations.get("ToAddresses", [])),
                        subject=getattr(message, "subject", None),
                        body=getattr(message, "body", None),
                    )
                mails.append(mail)
    return mails


def _with_sent_mail_route(application: type) -> type:
    """moto's WSGI application, answering SENT_MAIL_PATH itself (moto has no API for sent mail)."""

    class Application(application):  # type: ignore[misc]
        def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO") == SENT_MAIL_PATH:
                body = json.dumps(sent_mail()).encode()
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                start_response("200 OK", headers)
                return [body]
            return super().__call__(environ, start_response)

    return Application


def main(argv: list[str]) -> None:
    patch_moto()
    import moto.server

    # moto.server.main builds its application from this module attribute when it runs.
    setattr(  # noqa: B010 - moto does not export the name, so mypy would refuse a plain assignment
        moto.server,
        "DomainDispatcherApplication",
        _with_sent_mail_route(moto.server.DomainDispatcherApplication),  # type: ignore[attr-defined]
    )
    moto.server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
