"""The local stack itself: resources from the template, routing, the demo and the overview."""

import json
import os
import urllib.error
import urllib.request

import pytest
from cems.local.cfn import Template

from tests.e2e.conftest import ROOT, LocalStackClient

pytestmark = pytest.mark.e2e


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_every_table_of_the_template_exists_with_its_keys_stream_and_ttl(
    local_stack: LocalStackClient,
) -> None:
    template = Template.load(ROOT / "template.yaml")
    declared = template.resources_of_type("AWS::DynamoDB::Table")
    assert set(declared) <= set(local_stack.dynamodb.list_tables()["TableNames"])
    for name, resource in declared.items():
        props = resource["Properties"]
        table = local_stack.dynamodb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == props["KeySchema"]
        if "StreamSpecification" in props:
            assert (
                table["StreamSpecification"]["StreamViewType"]
                == props["StreamSpecification"]["StreamViewType"]
            )
            assert table["LatestStreamArn"]
        if "TimeToLiveSpecification" in props:
            ttl = local_stack.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"]
            assert ttl["TimeToLiveStatus"] == "ENABLED"


def test_overview_lists_routes_from_the_template(local_stack: LocalStackClient) -> None:
    status, _, body = get(f"{local_stack.http_url}/_local/")
    assert status == 200
    overview = json.loads(body)
    assert "ANY /v1/{kind} -> CollectFunction" in overview["routes"]
    assert "GET /tag.js -> CollectFunction" in overview["routes"]
    assert overview["write_key"] == "local-write-key"


def test_unrouted_path_gets_api_gateway_404(local_stack: LocalStackClient) -> None:
    status, _, body = get(f"{local_stack.http_url}/no/such/route")
    assert status == 404
    assert json.loads(body) == {"message": "Not Found"}


def test_demo_pages_carry_the_real_tag_with_local_endpoint_and_key(local_stack: LocalStackClient) -> None:
    for page in ("/demo", "/demo/cart.html", "/demo/checkout.html", "/demo/thanks.html"):
        status, _, body = get(f"{local_stack.http_url}{page}")
        assert status == 200, page
        text = body.decode()
        assert f"{local_stack.http_url}/tag.js" in text
        assert 'data-write-key="local-write-key"' in text
        assert "__CEMS_" not in text
    assert get(f"{local_stack.http_url}/demo/missing.html")[0] == 404


def test_ctrl_c_stops_the_stack_and_its_moto_server() -> None:
    import signal
    import socket
    import subprocess
    import sys

    from cems.local.running import free_port

    http_port, aws_port = free_port(), free_port()
    env = {**os.environ, "CEMS_HTTP_PORT": str(http_port), "CEMS_AWS_PORT": str(aws_port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cems", "local"], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "ready" in line and f"api=http://127.0.0.1:{http_port}" in line
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        for port in (http_port, aws_port):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    finally:
        process.kill()
