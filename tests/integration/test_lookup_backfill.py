"""The one-off backfill of contact lookup items for profiles written before lookups existed
(`cems customer reindex`, CustomerStore.backfill_lookups), on moto."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.cli import main as cems
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor
from cems.local.cfn import Template
from cems.local.resources import create_resources
from cems.lookups import ContactKind, contact_hash
from cems.models import SegmentMessage
from cems.settings import Settings
from cems.wiring import customer_stores
from moto.server import ThreadedMotoServer

from tests.integration.test_admin_handler import SITE

NOW = datetime(2026, 12, 4, 9, tzinfo=UTC)


def lookups(client: Any) -> list[str]:
    items = client.scan(TableName="CustomersTable")["Items"]
    return sorted(i["pk"]["S"] for i in items if i["pk"]["S"].startswith("LOOKUP#"))


def seed_without_lookups(client: Any) -> str:
    """A customer with an email and a phone, whose lookup items are then removed: a profile as it
    was written before lookups existed."""
    stores = customer_stores(client, Settings.from_environ())
    traits = {"email": "Hanako@Example.jp", "phone": "090-1234-5678", "name": "山田花子"}
    message = SegmentMessage.model_validate(
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": traits}
    )
    Ingestor(stores.ingest).ingest(SITE, [message], NOW)
    for pk in lookups(client):
        items = client.query(
            TableName="CustomersTable",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": pk}},
        )["Items"]
        for item in items:
            client.delete_item(TableName="CustomersTable", Key={"pk": item["pk"], "sk": item["sk"]})
    customer = stores.customers.customer_for(IdentityKey(IdentityKind.USER, "u1"))
    assert customer is not None and lookups(client) == []
    return customer


def test_the_backfill_writes_each_profiles_lookups_once_and_a_rerun_changes_nothing(dynamodb: Any) -> None:
    seed_without_lookups(dynamodb)
    store = CustomerStore("CustomersTable", dynamodb)
    totals = [sum(x) for x in zip(*(store.backfill_lookups(s, 3) for s in range(3)), strict=True)]
    assert totals == [1, 1, 0]
    expected = sorted(
        [
            f"LOOKUP#email#{contact_hash(ContactKind.EMAIL, 'hanako@example.jp')}",
            f"LOOKUP#phone#{contact_hash(ContactKind.PHONE, '09012345678')}",
        ]
    )
    assert lookups(dynamodb) == expected
    again = [sum(x) for x in zip(*(store.backfill_lookups(s, 3) for s in range(3)), strict=True)]
    assert again == [1, 1, 0] and lookups(dynamodb) == expected


def test_a_profile_whose_traits_changed_since_it_was_read_gets_no_stale_item(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = seed_without_lookups(dynamodb)
    store = CustomerStore("CustomersTable", dynamodb)
    scan = store.scan_profiles

    def scan_then_change(*args: Any, **kwargs: Any) -> Any:
        page = scan(*args, **kwargs)
        if page.profiles:  # the customer's address changes between the read and the backfill's write
            dynamodb.update_item(
                TableName="CustomersTable",
                Key={"pk": {"S": f"CUST#{customer}"}, "sk": {"S": "PROFILE"}},
                UpdateExpression="SET traits.email = :e",
                ExpressionAttributeValues={":e": {"S": "new@example.jp"}},
            )
        return page

    monkeypatch.setattr(store, "scan_profiles", scan_then_change)
    assert store.backfill_lookups(0, 1) == (1, 0, 1)
    assert lookups(dynamodb) == []


@pytest.fixture
def moto_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("CEMS_AWS_PORT", str(port))
    from tests.integration.conftest import TEMPLATE as TEMPLATE_PATH

    create_resources(Template.load(TEMPLATE_PATH), url)
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="ap-northeast-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    try:
        yield client
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5)
        server.stop()


def test_cems_customer_reindex_on_the_local_stack(
    moto_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_without_lookups(moto_stack)
    assert cems(["customer", "reindex", "--segments", "2"]) == 0
    out = capsys.readouterr().out
    assert "read 1 customers, wrote lookups for 1" in out and "hanako" not in out.lower()
    assert len(lookups(moto_stack)) == 2
