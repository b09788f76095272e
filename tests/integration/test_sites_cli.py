"""`cems site ...`: against the local stack's moto server, and against a deployed stage found from
samconfig.toml and the stage's CloudFormation outputs (moto in-process)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.keys import secret_key_item_key
from cems.adapters.dynamodb.sites import SiteStore
from cems.cli import main
from cems.local.cfn import Template
from cems.local.resources import create_resources
from cems.models import Trust
from cems.sites import SiteDirectory
from moto.server import ThreadedMotoServer

from tests.integration.conftest import TEMPLATE

ROOT = Path(__file__).parents[2]
SAMCONFIG = ROOT / "samconfig.toml"
REGION = "ap-northeast-1"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parsed_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def local_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto server on a free port with the template's tables, as `cems local` runs it."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("CEMS_AWS_PORT", str(port))
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    create_resources(Template.load(TEMPLATE), url)
    try:
        yield client
    finally:
        # The server shares moto's in-process state: leave nothing behind for other tests.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5)
        server.stop()
        clock.reset()


def sites_in(client: Any) -> list[dict[str, Any]]:
    return [
        {k: v.get("S", v.get("L")) for k, v in item.items()}
        for item in client.scan(TableName="SitesTable", ConsistentRead=True)["Items"]
    ]


# Local mode ----------------------------------------------------------------------------------------


def test_site_add_then_list_on_the_local_stack(local_aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "site", "add", "shop-main", "--origin", "https://shop.example.jp")
    assert (code, err) == (0, "")
    [added] = parsed_lines(out)
    assert added["name"] == "shop-main"
    assert added["origins"] == ["https://shop.example.jp"]
    assert added["write_key"].startswith("wk_") and len(added["write_key"]) > 20
    assert added["site_id"].startswith("site_")
    assert added["expires_at"] is None
    datetime.fromisoformat(added["created_at"])

    # The secret server key and the identity secret are shown once; the table keeps only the
    # secret key's hash.
    assert added["secret_key"].startswith("sk_") and len(added["secret_key"]) > 40
    assert added["identity_secret"].startswith("is_")
    stored = {item["write_key"]: item for item in sites_in(local_aws)}
    assert set(stored) == {added["write_key"], secret_key_item_key(added["secret_key"])}
    assert added["secret_key"] not in json.dumps(sites_in(local_aws))
    server = SiteStore("SitesTable", local_aws).get(added["secret_key"])
    assert server is not None and (server.trust, server.site_id) == (Trust.SERVER, added["site_id"])

    code, out, err = run(capsys, "site", "list")
    assert (code, err) == (0, "")
    listed = {s["trust"]: s for s in parsed_lines(out)}
    assert set(listed) == {"public", "server"}
    assert not any("identity_secret" in s for s in parsed_lines(out))
    # The table keeps times to the millisecond (cems.clock.iso); `site add` prints the full value.
    shown = {k: v for k, v in added.items() if k not in ("secret_key", "identity_secret")}
    assert {**listed["public"], "created_at": None} == {**shown, "created_at": None}
    listed = listed["public"]
    assert abs(
        datetime.fromisoformat(listed["created_at"]) - datetime.fromisoformat(added["created_at"])
    ) < timedelta(milliseconds=1)


def test_site_add_takes_several_origins_and_a_chosen_write_key(
    local_aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "site",
        "add",
        "local-shop",
        "--origin",
        "http://localhost:3000",
        "--origin",
        "http://127.0.0.1:3000",
        "--write-key",
        "local-write-key",
    )
    assert code == 0
    [added] = parsed_lines(out)
    assert added["write_key"] == "local-write-key"
    assert added["origins"] == ["http://localhost:3000", "http://127.0.0.1:3000"]
    site = SiteStore("SitesTable", local_aws).get("local-write-key")
    assert site is not None and site.allows_origin("http://127.0.0.1:3000")


def test_site_add_without_an_origin_is_refused_with_a_hint(
    local_aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "site", "add", "shop-main")
    assert code == 2
    assert out == ""
    assert "--origin" in err and "error" in err.lower()
    assert sites_in(local_aws) == []


def test_rotate_issues_a_new_key_and_the_old_one_works_until_the_grace_ends(
    local_aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.fromisoformat("2026-11-23T03:00:00+00:00")
    clock.freeze(now)
    _, out, _ = run(capsys, "site", "add", "shop-main", "--origin", "https://shop.example.jp")
    [old] = parsed_lines(out)

    code, out, err = run(capsys, "site", "add", "shop-main", "--rotate", "--grace-hours", "1")
    assert (code, err) == (0, "")
    [rotated] = parsed_lines(out)
    new = rotated["site"]
    [retiring] = rotated["retiring"]
    assert new["write_key"] != old["write_key"]
    assert (new["site_id"], new["name"], new["origins"]) == (old["site_id"], "shop-main", old["origins"])
    assert new["expires_at"] is None
    assert retiring["write_key"] == old["write_key"]
    assert datetime.fromisoformat(retiring["expires_at"]) == now + timedelta(hours=1)

    _, out, _ = run(capsys, "site", "list")
    assert {s["write_key"]: s["expires_at"] is None for s in parsed_lines(out) if s["trust"] == "public"} == {
        old["write_key"]: False,
        new["write_key"]: True,
    }

    # What the collect function sees (no cache, so each lookup reads the table).
    directory = SiteDirectory(SiteStore("SitesTable", local_aws), max_age_seconds=0)
    clock.freeze(now + timedelta(minutes=59))
    old_site, new_site = directory.active_site(old["write_key"]), directory.active_site(new["write_key"])
    assert old_site is not None and new_site is not None
    assert old_site.site_id == new_site.site_id
    clock.freeze(now + timedelta(hours=1))
    assert directory.active_site(old["write_key"]) is None
    assert directory.active_site(new["write_key"]) is not None


def test_rotate_can_replace_the_origins(local_aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "site", "add", "shop-main", "--origin", "https://shop.example.jp")
    code, out, _ = run(
        capsys, "site", "add", "shop-main", "--rotate", "--origin", "https://www.shop.example.jp"
    )
    assert code == 0
    assert parsed_lines(out)[0]["site"]["origins"] == ["https://www.shop.example.jp"]


def test_rotating_the_secrets_retires_the_old_server_key_and_identity_secret_after_the_grace(
    local_aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.fromisoformat("2026-11-23T03:00:00+00:00")
    clock.freeze(now)
    _, out, _ = run(capsys, "site", "add", "shop-main", "--origin", "https://shop.example.jp")
    [old] = parsed_lines(out)
    code, out, err = run(capsys, "site", "add", "shop-main", "--rotate-secrets", "--grace-hours", "2")
    assert (code, err) == (0, "")
    [new] = parsed_lines(out)
    assert new["secret_key"] != old["secret_key"] and new["identity_secret"] != old["identity_secret"]
    assert new["write_key"] == old["write_key"]  # the tag in the shop's pages stays as it is

    directory = SiteDirectory(SiteStore("SitesTable", local_aws), max_age_seconds=0)
    clock.freeze(now + timedelta(hours=1))
    site = directory.active_site(old["write_key"])
    assert site is not None and site.identity_secrets(clock.now()) == [
        new["identity_secret"],
        old["identity_secret"],
    ]
    assert directory.active_site(old["secret_key"]) is not None
    clock.freeze(now + timedelta(hours=2))
    site = directory.active_site(old["write_key"])
    assert site is not None and site.identity_secrets(clock.now()) == [new["identity_secret"]]
    assert directory.active_site(old["secret_key"]) is None
    assert directory.active_site(new["secret_key"]) is not None


def test_the_key_cache_stays_bounded_under_random_keys(local_aws: Any) -> None:
    store = SiteStore("SitesTable", local_aws)
    site = store.add("shop-main", ["https://shop.example.jp"]).site
    directory = SiteDirectory(store, max_age_seconds=60, max_entries=16)
    for n in range(100):
        assert directory.active_site(f"wk_random-{n}") is None
    assert directory.cached_keys() == 16
    assert directory.active_site(site.write_key) is not None
    assert directory.cached_keys() == 16
    # A key longer than any issued is no key: no read (DynamoDB refuses keys over 2 KB), not cached.
    reads = []
    store.client.meta.events.register("before-send.dynamodb.GetItem", lambda **_: reads.append(1))
    assert directory.active_site("wk_" + "x" * 3000) is None
    assert (reads, directory.cached_keys()) == ([], 16)


def test_rotating_a_site_that_does_not_exist_is_an_error(
    local_aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "site", "add", "no-such-shop", "--rotate")
    assert code == 2
    assert out == ""
    assert "no-such-shop" in err
    assert sites_in(local_aws) == []


# Stage mode ----------------------------------------------------------------------------------------

STAGE_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "SitesTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "write_key", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "write_key", "KeyType": "HASH"}],
            },
        }
    },
    "Outputs": {"SitesTableName": {"Value": {"Ref": "SitesTable"}}},
}


@pytest.fixture
def dev_stack(aws: None) -> str:
    """The dev stage's stack (name and region as samconfig.toml says); returns its Sites table."""
    import tomllib

    parameters = tomllib.loads(SAMCONFIG.read_text())["dev"]["deploy"]["parameters"]
    cloudformation = boto3.client("cloudformation", region_name=parameters["region"])
    cloudformation.create_stack(StackName=parameters["stack_name"], TemplateBody=json.dumps(STAGE_TEMPLATE))
    [stack] = cloudformation.describe_stacks(StackName=parameters["stack_name"])["Stacks"]
    table: str = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == "SitesTableName")
    # A deployed stack names its tables; the local stack's plain "SitesTable" must not be the one used.
    assert table != "SitesTable"
    return table


def test_site_add_with_a_stage_writes_to_that_stages_sites_table(
    dev_stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "site",
        "add",
        "shop-main",
        "--origin",
        "https://shop.example.jp",
        "--stage",
        "dev",
        "--config",
        str(SAMCONFIG),
    )
    assert (code, err) == (0, "")
    [added] = parsed_lines(out)
    site = SiteStore(dev_stack, boto3.client("dynamodb", region_name=REGION)).get(added["write_key"])
    assert site is not None
    assert (site.name, site.origins) == ("shop-main", ["https://shop.example.jp"])

    code, out, _ = run(capsys, "site", "list", "--stage", "dev", "--config", str(SAMCONFIG))
    assert code == 0
    assert [s["write_key"] for s in parsed_lines(out) if s["trust"] == "public"] == [added["write_key"]]


def test_a_stage_missing_from_samconfig_is_a_clear_error(
    dev_stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["site", "list", "--stage", "staging", "--config", str(SAMCONFIG)])
    assert "staging" in str(exit_info.value.code)
