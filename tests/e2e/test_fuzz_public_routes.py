"""Property-based fuzzing (Hypothesis) of every public route of the local stack, over real HTTP.

For whatever a stranger on the internet can send (deep JSON, extreme numbers and dates, lone UTF-16
surrogates, invalid UTF-8, broken or explosive gzip, oversized bodies, odd Authorization headers, LINE
webhooks signed with the local channel secret carrying odd events, forged tracking tokens):

- never a 5xx, and never a hang (HANG_SECONDS is a hang detector, not a speed test);
- every 4xx with a JSON body names its `field` or `limit` (cems.errors.ClientError.body), except
  API Gateway's own answers (`{"message": ...}` only), which CEMS does not write;
- nothing is stored for a rejected request: each request carries fresh markers, and after each test
  the Events and Customers tables are scanned for the markers of every rejected request (and, for
  LINE, the good events beside an odd one are there when LINE was answered 200);
- no line the stack printed (its functions' logs included) is longer than cems.logs.MAX_LINE_BYTES.

Reproducible and bounded: derandomized, no example database, a fixed number of examples per test,
plus explicit `@example`s for each class of input. The module has a stack of its own, so its LINE
users and events never reach another module's broadcasts and reports, whatever order or worker the
modules run in; its log lines get the log privacy scan (tests/e2e/test_log_privacy.py) here.
"""

from __future__ import annotations

import base64
import collections
import gzip
import http.client
import json
import re
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.engagement.tokens import InvalidToken, TokenKind, TokenSigner, TrackingToken
from cems.line.config import LOCAL_CHANNEL_SECRET
from cems.line.webhook import sign
from cems.local.cfn import Template, function_specs
from cems.logs import MAX_LINE_BYTES
from cems.web.tokens import WebToken, WebTokenSigner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import LocalStackClient, privacy_findings, started_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStackClient]:
    """This module's own stack (it overrides the shared one): see the module's docstring."""
    with started_stack() as stack:
        yield stack


ROOT = Path(__file__).parents[2]
# A request that has not been answered in this long is hung (the slowest answers here take well under
# a second; this only has to tell "slow" from "never").
HANG_SECONDS = 60
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
# A fresh marker replaces this in every request, so what a request stored can be found.
M = "@@M@@"
MARKER = re.compile(r"fz[0-9a-f]{20}")
FUZZ_LINE_USER = "U" + "f0" * 16
# Segment's limits (FACTS.md).
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024


# -- HTTP ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Ledger:
    """The markers of each request, by how it was answered."""

    rejected: set[str] = field(default_factory=set)
    must_be_stored: set[str] = field(default_factory=set)
    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    # What each accepted request sent, by its marker, for a failure found only afterwards.
    sent: dict[str, str] = field(default_factory=dict)

    def answered(self, answer: Answer) -> None:
        self.requests += 1
        self.statuses[answer.status] += 1

    def summary(self) -> str:
        return f"{self.requests} requests, answers {dict(sorted(self.statuses.items()))}"


def send(
    stack: LocalStackClient, method: str, path: str, body: bytes | None, headers: dict[str, Any]
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=HANG_SECONDS)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        try:
            response = connection.getresponse()
        except TimeoutError:
            pytest.fail(f"{method} {path}: no answer in {HANG_SECONDS} s (a hang)")
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def check(answer: Answer, what: str) -> None:
    """The properties every answer has."""
    what = what if len(what) <= 400 else what[:400] + "…"
    assert answer.status < 500, f"{what}: {answer.status} {answer.body[:500]!r}"
    # (A HEAD answer has the headers of a JSON answer and no body.)
    if 400 <= answer.status < 500 and "json" in answer.headers.get("content-type", "") and answer.body:
        document = answer.json()
        assert isinstance(document, dict), f"{what}: {answer.status} {answer.body[:300]!r}"
        if set(document) == {"message"}:
            return  # API Gateway's own answer (no such route): not written by CEMS
        assert "field" in document or "limit" in document, (
            f"{what}: {answer.status} names no field or limit: {answer.body[:500]!r}"
        )


def fresh_marker() -> str:
    return "fz" + uuid.uuid4().hex[:20]


DYNAMODB_TYPES = {"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"}


def raw_items(stack: LocalStackClient, table: str) -> Iterator[dict[str, Any]]:
    """Every item of `table` as the DynamoDB API returns it, read without botocore's parser (which
    fails on a malformed item, and finding those is the point)."""
    start: Any = None
    while True:
        request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        if start:
            request["ExclusiveStartKey"] = start
        connection = http.client.HTTPConnection(urlsplit(stack.aws_url).netloc, timeout=HANG_SECONDS)
        try:
            connection.request(
                "POST",
                "/",
                json.dumps(request),
                {
                    "X-Amz-Target": "DynamoDB_20120810.Scan",
                    "Content-Type": "application/x-amz-json-1.0",
                    # moto reads the region and account from the credential scope; it checks no signature.
                    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/ap-northeast-1/dynamodb/"
                    "aws4_request, SignedHeaders=host, Signature=0",
                },
            )
            page = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        yield from page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return


def malformed(value: Any, path: str) -> str | None:
    """Where an attribute value is not one a DynamoDB client can read, else None."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in DYNAMODB_TYPES:
        return f"{path} = {json.dumps(value)[:100]}"
    [(kind, inner)] = value.items()
    children = inner.items() if kind == "M" and isinstance(inner, dict) else []
    if kind == "L" and isinstance(inner, list):
        children = [(f"[{i}]", child) for i, child in enumerate(inner)]
    for name, child in children:
        found = malformed(child, f"{path}.{name}" if kind == "M" else f"{path}{name}")
        if found:
            return found
    return None


def check_ledger(stack: LocalStackClient, ledger: Ledger) -> None:
    """Nothing of a rejected request is stored; the good LINE events of an accepted one are; and
    whatever was stored can be read back (a client's parser fails on a malformed item, and with it
    every read of that customer's events)."""
    stored: set[str] = set()
    unreadable: list[str] = []
    ours = ledger.sent.keys() | ledger.rejected | ledger.must_be_stored
    for table in ("EventsTable", "CustomersTable"):
        for item in raw_items(stack, table):
            markers = set(MARKER.findall(json.dumps(item, ensure_ascii=True)))
            stored |= markers
            problem = next(filter(None, (malformed(v, k) for k, v in item.items())), None)
            if problem and markers & ours:
                sent = [ledger.sent.get(m, "") for m in markers]
                unreadable.append(f"{table}: {problem}; stored by: {' '.join(sent)[:600]}")
    kept = ledger.rejected & stored
    assert not kept, f"stored although the request was rejected: {sorted(kept)[:10]}"
    lost = ledger.must_be_stored - stored
    assert not lost, f"good events not stored beside an odd one: {sorted(lost)[:10]}"
    assert not unreadable, "stored in a form no client can read back:\n" + "\n".join(unreadable[:10])


# -- JSON fragments that are valid, almost valid or hostile ------------------------------------------


def deep(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


DEPTHS = st.integers(33, 250) | st.sampled_from([999, 1000, 1001, 5000, 50_000])
DEEP = st.builds(deep, DEPTHS, st.sampled_from(["array", "object"]))
NUMBERS = st.sampled_from(
    [
        "1e400",
        "-1e400",
        "1e-200",
        "-0",
        "-0.0",
        "1" * 42,
        "-" + "9" * 42,
        "9" * 5000,
        "NaN",
        "Infinity",
        "-Infinity",
        "1E+126",
        "9.99E+125",
        "1E-131",
        "123456789012345678901234567890123456789.5",
    ]
)
DATES = st.sampled_from(
    [
        '"0001-01-01T00:00:00+14:00"',
        '"9999-12-31T23:59:59-14:00"',
        '"9999-12-31T23:59:59.999999Z"',
        '"0000-01-01T00:00:00Z"',
        '"2026-02-30T00:00:00Z"',
        '"+275760-09-13T00:00:00Z"',
        '"1970-01-01T00:00:00Z"',
        '"2026-01-01T00:00:00"',
        '"2026-01-01T00:00:00.123456789Z"',
        '"not a date"',
        '""',
        "0",
        "-1",
        "1e400",
        "253402300800000",
        "null",
    ]
)
STRINGS = st.sampled_from(
    [
        '"\\ud800"',
        '"half an emoji \\ud83c"',
        '"\\udfff\\ud800"',
        '"\\ud83d\\ude00"',
        '"\\u0000"',
        '"' + "長" * 12_000 + '"',
    ]
)
WRONG_TYPES = st.sampled_from(["null", "true", "[]", "{}", '"x"', "[1,2,3]", '{"": {}}', '{"": true}'])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
).map(lambda value: json.dumps(value))
FRAGMENTS = DEEP | NUMBERS | DATES | STRINGS | WRONG_TYPES | JSON_VALUES


# -- the collect routes (/v1/{kind}, /v1/line/link) ----------------------------------------------------

KINDS = {
    "track": "track",
    "t": "track",
    "identify": "identify",
    "i": "identify",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "alias": "alias",
    "a": "alias",
    "group": "group",
    "g": "group",
    "batch": "track",
    "b": "track",
    "import": "track",
    "nothing": "track",
}
SLOTS = [
    "properties.v",
    "traits.v",
    "context.v",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "messageId",
    "anonymousId",
    "userId",
    "event",
    "type",
    "properties",
    "message",
    "batch",
    "batch.sentAt",
    "body",
]


def segment_message(kind: str, slot: str, fragment: str, pad: int = 0) -> str:
    """A Segment message as JSON text, with `fragment` (raw JSON) in `slot`."""
    fields: dict[str, str] = {
        "type": json.dumps(KINDS[kind]),
        "messageId": json.dumps(M),
        "anonymousId": json.dumps(f"anon-{M}"),
        "event": '"Fuzz Tested"',
        "name": '"Fuzz"',
        "groupId": json.dumps(f"group-{M}"),
        "timestamp": json.dumps(datetime.now(UTC).isoformat()),
        "properties": json.dumps({"marker": M, **({"pad": "x" * pad} if pad else {})}),
        "context": '{"library":{"name":"fuzz"}}',
    }
    if KINDS[kind] == "alias":
        fields |= {"previousId": json.dumps(f"anon-{M}"), "userId": json.dumps(f"user-{M}")}
    top, _, inner = slot.partition(".")
    if slot == "message":
        return fragment
    if inner and top in ("properties", "traits", "context"):
        fields[top] = "{" + f'"marker":{json.dumps(M)},"{inner}":{fragment}' + "}"
    elif top in fields or top in ("originalTimestamp", "sentAt", "userId", "traits"):
        fields[top] = fragment
    return "{" + ",".join(f'"{key}":{value}' for key, value in fields.items()) + "}"


def collect_body(kind: str, slot: str, fragment: str, size: str) -> str:
    """The whole request body: one message, or a batch for the batch paths."""
    pad = {"normal": 0, "over_message": MAX_MESSAGE_BYTES, "over_batch": 20 * 1024}[size]
    if slot == "body":
        return fragment
    message = segment_message(kind, slot, fragment if slot != "batch.sentAt" else "0", pad)
    if kind not in ("batch", "b", "import") and size != "over_batch":
        return message
    count = MAX_BATCH_BYTES // (20 * 1024) + 2 if size == "over_batch" else 2
    second = segment_message(kind, "properties.v", "1", pad).replace(json.dumps(M), json.dumps(M + "b"), 1)
    items = fragment if slot == "batch" else ",".join([message] + [second] * (count - 1))
    sent_at = fragment if slot == "batch.sentAt" else json.dumps(datetime.now(UTC).isoformat())
    if slot == "batch":
        return '{"batch":' + items + ',"sentAt":' + sent_at + "}"
    return '{"batch":[' + items + '],"sentAt":' + sent_at + "}"


@cache
def gzip_bomb() -> bytes:
    """About 50 KB that inflates to 64 MB of JSON whitespace."""
    return gzip.compress(b'{"batch":[' + b" " * (64 * 1024 * 1024) + b"]}", compresslevel=9)


ENCODINGS = ["none", "gzip", "gzip-garbage", "gzip-truncated", "gzip-bomb", "deflate", "br", "identity"]
CORRUPTIONS = ["none", "invalid-utf8", "bom", "nul"]
CONTENT_TYPES = [
    "application/json",
    "text/plain;charset=UTF-8",
    "application/octet-stream",
    None,
    "application/x-www-form-urlencoded",
]


def authorizations(write_key: str, secret_key: str = "sk_unknown") -> dict[str, Any]:
    """Authorization header values (None: no header; "body": the key in the body instead; "query":
    `?writeKey=` in the URL; "server": the secret server key, trusted, refused from a browser)."""
    return {
        "basic": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode(),
        "server": "Basic " + base64.b64encode(f"{secret_key}:".encode()).decode(),
        "body": None,
        "query": None,
        "none": None,
        "wrong-key": "Basic " + base64.b64encode(b"no-such-key:").decode(),
        "not-base64": "Basic !!!not base64!!!",
        "not-utf8": "Basic " + base64.b64encode(b"\xff\xfe\xfd:").decode(),
        "no-colon": "Basic " + base64.b64encode(write_key.encode()).decode(),
        "empty-basic": "Basic",
        "bearer": "Bearer " + write_key,
        "latin1": b"Basic \xe9\xff",
        "huge": "Basic " + "A" * 20_000,
    }


@dataclass(frozen=True)
class CollectCase:
    path_kind: str
    slot: str
    fragment: str
    size: str
    encoding: str
    corruption: str
    content_type: str | None
    auth: str
    method: str


COLLECT_CASES = st.builds(
    CollectCase,
    path_kind=st.sampled_from(sorted(KINDS)),
    slot=st.sampled_from(SLOTS),
    fragment=FRAGMENTS,
    size=st.sampled_from(["normal", "normal", "normal", "over_message", "over_batch"]),
    encoding=st.sampled_from(ENCODINGS[:1] * 6 + ENCODINGS),
    corruption=st.sampled_from(CORRUPTIONS[:1] * 6 + CORRUPTIONS),
    content_type=st.sampled_from(CONTENT_TYPES),
    auth=st.sampled_from(["basic"] * 4 + ["body"] * 2 + ["server"] * 2 + list(authorizations("k"))),
    method=st.sampled_from(["POST"] * 12 + ["GET", "PUT", "OPTIONS", "DELETE"]),
)


def encoded(raw: bytes, encoding: str) -> tuple[bytes, str | None]:
    if encoding == "none":
        return raw, None
    if encoding == "gzip":
        return gzip.compress(raw), "gzip"
    if encoding == "gzip-garbage":
        return b"\x1f\x8b\x08\x00garbage" + raw[:100], "gzip"
    if encoding == "gzip-truncated":
        return gzip.compress(raw)[: max(10, len(raw) // 3)], "gzip"
    if encoding == "gzip-bomb":
        return gzip_bomb(), "gzip"
    if encoding == "deflate":
        return zlib.compress(raw), "deflate"
    return raw, encoding  # br (not supported), identity


def corrupted(raw: bytes, corruption: str) -> bytes:
    if corruption == "invalid-utf8":
        return raw.replace(b"Fuzz", b"F\xff\xfez", 1) if b"Fuzz" in raw else raw + b"\xff"
    if corruption == "bom":
        return b"\xef\xbb\xbf" + raw
    if corruption == "nul":
        return raw + b"\x00"
    return raw


def collect_request(
    stack: LocalStackClient, case: CollectCase, marker: str
) -> tuple[str, bytes, dict[str, Any]]:
    text = collect_body(case.path_kind, case.slot, case.fragment, case.size)
    if case.auth == "body" and text.startswith("{") and len(text) > 2:
        text = '{"writeKey":' + json.dumps(stack.write_key) + "," + text[1:]
    raw = corrupted(text.replace(M, marker).encode("utf-8", "surrogatepass"), case.corruption)
    body, content_encoding = encoded(raw, case.encoding)
    headers: dict[str, Any] = {}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    if content_encoding:
        headers["Content-Encoding"] = content_encoding
    authorization = authorizations(stack.write_key, stack.secret_key)[case.auth]
    if authorization is not None:
        headers["Authorization"] = authorization
    query = f"?writeKey={stack.write_key}" if case.auth == "query" else ""
    return f"/v1/{case.path_kind}{query}", body, headers


def fuzz_collect(stack: LocalStackClient, ledger: Ledger, case: CollectCase) -> None:
    marker = fresh_marker()
    path, body, headers = collect_request(stack, case, marker)
    answer = send(stack, case.method, path, body, headers)
    ledger.answered(answer)
    check(answer, f"{case.method} {path} {case}"[:2000])
    if answer.status >= 400:
        ledger.rejected.add(marker)
    else:
        ledger.sent[marker] = f"{case.method} {path} {case}"


def test_fuzz_collect(local_stack: LocalStackClient) -> None:
    @FUZZ
    @given(case=COLLECT_CASES)
    # One explicit example of each class, so each is tried whatever Hypothesis draws.
    @example(
        case=CollectCase(
            "track",
            "message",
            deep(5000, "array"),
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "batch",
            "properties.v",
            deep(5000, "object"),
            "normal",
            "none",
            "none",
            "text/plain;charset=UTF-8",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "properties.v",
            deep(40, "object"),
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "t",
            "context.v",
            deep(200, "array"),
            "normal",
            "none",
            "none",
            "text/plain;charset=UTF-8",
            "body",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1e400", "normal", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1e-200", "normal", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "-0", "normal", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1" * 42, "normal", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "9" * 5000, "normal", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track",
            "properties.v",
            '{"": true}',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "NaN", "normal", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track",
            "properties.v",
            "-Infinity",
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "timestamp",
            '"0001-01-01T00:00:00+14:00"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "timestamp",
            '"9999-12-31T23:59:59-14:00"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "batch",
            "batch.sentAt",
            '"0001-01-01T00:00:00Z"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "sentAt",
            '"9999-12-31T23:59:59-14:00"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "timestamp",
            '"not a date"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "properties.v",
            '"\\ud800"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "identify",
            "traits.v",
            '"half an emoji \\ud83c"',
            "normal",
            "none",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "properties.v",
            "1",
            "normal",
            "none",
            "invalid-utf8",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track",
            "properties.v",
            "1",
            "normal",
            "none",
            "invalid-utf8",
            "application/octet-stream",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "batch",
            "properties.v",
            "1",
            "normal",
            "gzip-garbage",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "batch",
            "properties.v",
            "1",
            "normal",
            "gzip-truncated",
            "none",
            "application/json",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "batch", "properties.v", "1", "normal", "gzip-bomb", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "batch",
            "properties.v",
            "1",
            "normal",
            "gzip",
            "none",
            "application/octet-stream",
            "basic",
            "POST",
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "over_message", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "batch", "properties.v", "1", "over_batch", "none", "none", "application/json", "basic", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "normal", "none", "none", "application/json", "not-base64", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "normal", "none", "none", "application/json", "not-utf8", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "normal", "none", "none", "application/json", "latin1", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "normal", "none", "none", "application/json", "none", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "normal", "none", "none", "application/json", "wrong-key", "POST"
        )
    )
    @example(
        case=CollectCase(
            "track", "properties.v", "1", "normal", "none", "none", "application/json", "basic", "GET"
        )
    )
    def fuzz(case: CollectCase) -> None:
        fuzz_collect(local_stack, ledger, case)

    ledger = Ledger()
    fuzz()
    check_ledger(local_stack, ledger)
    print(ledger.summary())


LINK_SLOTS = ["anonymousId", "linkToken", "userId", "userHash", "body"]


@dataclass(frozen=True)
class LinkCase:
    slot: str
    fragment: str
    encoding: str
    corruption: str
    auth: str
    method: str


LINK_CASES = st.builds(
    LinkCase,
    slot=st.sampled_from(LINK_SLOTS),
    fragment=FRAGMENTS,
    encoding=st.sampled_from(ENCODINGS[:1] * 6 + ENCODINGS),
    corruption=st.sampled_from(CORRUPTIONS[:1] * 6 + CORRUPTIONS),
    auth=st.sampled_from(["basic", "body", *authorizations("k")]),
    method=st.sampled_from(["POST"] * 8 + ["GET", "OPTIONS", "PATCH"]),
)


def test_fuzz_line_link(local_stack: LocalStackClient) -> None:
    @settings(FUZZ, max_examples=40)
    @given(case=LINK_CASES)
    @example(case=LinkCase("userId", deep(5000, "array"), "none", "none", "basic", "POST"))
    @example(case=LinkCase("anonymousId", deep(100, "object"), "none", "none", "basic", "POST"))
    @example(case=LinkCase("userHash", '"\\ud800"', "none", "none", "basic", "POST"))
    @example(case=LinkCase("linkToken", "1e400", "none", "none", "basic", "POST"))
    @example(case=LinkCase("body", "9" * 5000, "none", "none", "basic", "POST"))
    @example(case=LinkCase("linkToken", '"tok"', "gzip-bomb", "none", "basic", "POST"))
    @example(case=LinkCase("linkToken", '"tok"', "none", "invalid-utf8", "not-utf8", "POST"))
    def fuzz(case: LinkCase) -> None:
        fields = {
            "anonymousId": json.dumps(f"anon-{M}"),
            "linkToken": '"LinkTokFuzz0001"',
            "userId": json.dumps(f"user-{M}"),
            "userHash": '"' + "0" * 64 + '"',
        }
        if case.auth == "body":
            fields["writeKey"] = json.dumps(local_stack.write_key)
        if case.slot != "body":
            fields[case.slot] = case.fragment
        text = (
            case.fragment
            if case.slot == "body"
            else "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"
        )
        marker = fresh_marker()
        raw = corrupted(text.replace(M, marker).encode("utf-8", "surrogatepass"), case.corruption)
        body, content_encoding = encoded(raw, case.encoding)
        headers: dict[str, Any] = {"Content-Type": "text/plain;charset=UTF-8"}
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        authorization = authorizations(local_stack.write_key)[case.auth]
        if authorization is not None:
            headers["Authorization"] = authorization
        answer = send(local_stack, case.method, "/v1/line/link", body, headers)
        ledger.answered(answer)
        check(answer, f"{case.method} /v1/line/link {case}"[:2000])
        if answer.status >= 400:
            ledger.rejected.add(marker)
        else:
            ledger.sent[marker] = f"{case.method} /v1/line/link {case}"

    ledger = Ledger()
    fuzz()
    check_ledger(local_stack, ledger)
    print(ledger.summary())


# -- the LINE webhook ------------------------------------------------------------------------------------


def line_event(kind: str, event_id: str, at_ms: int, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "timestamp": at_ms,
        "source": {"type": "user", "userId": FUZZ_LINE_USER},
        "mode": "active",
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": False},
    }
    if kind == "message":
        event |= {"replyToken": "f" * 32, "message": {"type": "text", "id": "1", "text": "fuzz"}}
    elif kind == "postback":
        event |= {"replyToken": "f" * 32, "postback": {"data": "fuzz=1"}}
    elif kind == "follow":
        event |= {"replyToken": "f" * 32, "follow": {"isUnblocked": False}}
    for key, value in changes.items():
        if value is DROP:
            event.pop(key, None)
        else:
            event[key] = value
    return event


DROP = object()
ODD_EVENTS: dict[str, dict[str, Any]] = {
    "follow-without-reply-token": {"type": "follow", "replyToken": DROP},
    "unknown-type": {"type": "storyReaction"},
    "no-source": {"source": DROP},
    "no-timestamp": {"timestamp": DROP},
    "no-webhook-event-id": {"webhookEventId": DROP},
    "no-type": {"type": DROP},
    "timestamp-text": {"timestamp": "yesterday"},
    "timestamp-float": {"timestamp": 1.5},
    "timestamp-huge": {"timestamp": 10**42},
    "timestamp-negative": {"timestamp": -(10**15)},
    "type-number": {"type": 5},
    "type-list": {"type": ["follow"]},
    "source-text": {"source": "U123"},
    "source-without-user": {"source": {"type": "group", "groupId": "C1"}},
    "user-id-number": {"source": {"type": "user", "userId": 42}},
    "user-id-huge": {"source": {"type": "user", "userId": "U" + "a" * 5000}},
    "mode-odd": {"mode": "sideways"},
    "delivery-context-null": {"deliveryContext": None},
    "event-id-huge": {"webhookEventId": "E" * 500},
    "text-surrogate": {"message": {"type": "text", "id": "1", "text": "\ud800"}},
    "text-huge": {"message": {"type": "text", "id": "1", "text": "長" * 40_000}},
    "text-object": {"message": {"type": "text", "id": "1", "text": {"a": 1}}},
    "message-unknown-type": {"message": {"type": "hologram", "id": "1"}},
    "postback-params-odd": {"type": "postback", "postback": {"data": "x", "params": {"a": [1]}}},
    "postback-params-empty-key": {"type": "postback", "postback": {"data": "x", "params": {"": "x"}}},
    "account-link-odd": {"type": "accountLink", "link": {"result": "ok", "nonce": 5}},
    "account-link-unknown-nonce": {"type": "accountLink", "link": {"result": "ok", "nonce": "nope"}},
    "deep-40": {"extra": json.loads(deep(40, "object"))},
    "deep-200": {"message": json.loads(deep(200, "array"))},
}


@dataclass(frozen=True)
class WebhookCase:
    odd: str | None  # a key of ODD_EVENTS, or None for only good events
    good: int  # good events beside it
    position: int
    body: str  # "events", or a whole-body variation
    signature: str  # "valid", "none", "other-secret", "other-body", "garbage"
    content_type: str | None


WEBHOOK_BODIES = [
    "events",
    "events",
    "events",
    "events",
    "deep-body-arrays",
    "deep-body-objects",
    "deep-body-100",
    "not-json",
    "events-object",
    "top-level-list",
    "invalid-utf8",
    "numbers",
    "not-an-event",
]
WEBHOOK_CASES = st.builds(
    WebhookCase,
    odd=st.none() | st.sampled_from(sorted(ODD_EVENTS)),
    good=st.integers(0, 3),
    position=st.integers(0, 3),
    body=st.sampled_from(WEBHOOK_BODIES),
    signature=st.sampled_from(["valid"] * 8 + ["none", "other-secret", "other-body", "garbage"]),
    content_type=st.sampled_from(["application/json; charset=utf-8", "application/octet-stream", None]),
)


def webhook_body(case: WebhookCase, at_ms: int) -> tuple[bytes, list[str], list[str]]:
    """(body, markers of the good events, markers of every event)."""
    good_ids = [fresh_marker() for _ in range(case.good)]
    events: list[Any] = [
        line_event(("message", "unfollow", "postback")[i % 3], m, at_ms) for i, m in enumerate(good_ids)
    ]
    odd_id = fresh_marker()
    if case.odd is not None:
        odd = line_event("message", odd_id, at_ms, **ODD_EVENTS[case.odd])
        events.insert(min(case.position, len(events)), odd)
    all_ids = [*good_ids, odd_id]
    document: Any = {"destination": "U" + "0" * 32, "events": events}
    if case.body == "not-an-event":
        events.append("not an event")
    if case.body.startswith("deep-body"):
        depth = 100 if case.body == "deep-body-100" else 20_000
        inner = deep(depth, "array" if case.body.endswith("arrays") else "object")
        text = json.dumps(document)[:-2] + ("," if events else "") + inner + "]}"
        return text.encode(), [], all_ids
    if case.body == "not-json":
        return b'{"events": [' + json.dumps(events).encode()[1:-1], [], all_ids
    if case.body == "events-object":
        document["events"] = {"0": events}
    if case.body == "top-level-list":
        document = events
    raw = json.dumps(document).encode()
    if case.body == "invalid-utf8":
        raw = raw.replace(b'"destination"', b'"dest\xffination"')
    if case.body == "numbers":
        raw = raw.replace(b'"destination"', b'"n1":1e400,"n2":' + b"9" * 50 + b',"n3":-0,"destination"')
    good = good_ids if case.body in ("events", "numbers", "not-an-event") else []
    return raw, good, all_ids


def fuzz_webhook(stack: LocalStackClient, ledger: Ledger, case: WebhookCase, at_ms: int) -> None:
    raw, good, every = webhook_body(case, at_ms)
    signature = {
        "valid": sign(raw, LOCAL_CHANNEL_SECRET),
        "none": None,
        "other-secret": sign(raw, "someone-elses-secret"),
        "other-body": sign(raw + b" ", LOCAL_CHANNEL_SECRET),
        "garbage": "!!not a signature\u00e9",
    }[case.signature]
    headers: dict[str, Any] = {}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    if signature is not None:
        headers["X-Line-Signature"] = signature.encode("latin-1")
    answer = send(stack, "POST", "/line/webhook", raw, headers)
    ledger.answered(answer)
    check(answer, f"POST /line/webhook {case}")
    if case.signature != "valid":
        assert answer.status == 401, f"{case}: {answer.status}"
    if answer.status >= 400:
        ledger.rejected |= set(every)
    else:
        ledger.must_be_stored |= set(good)
        ledger.sent |= dict.fromkeys(every, f"POST /line/webhook {case}")


def test_fuzz_line_webhook(local_stack: LocalStackClient) -> None:
    at_ms = int(local_stack.now().timestamp() * 1000)

    @settings(FUZZ, max_examples=100)
    @given(case=WEBHOOK_CASES)
    @example(case=WebhookCase(None, 1, 0, "deep-body-arrays", "valid", "application/json; charset=utf-8"))
    @example(case=WebhookCase(None, 1, 0, "deep-body-objects", "valid", "application/json; charset=utf-8"))
    @example(case=WebhookCase(None, 1, 0, "deep-body-100", "valid", "application/json; charset=utf-8"))
    @example(case=WebhookCase(None, 1, 0, "deep-body-arrays", "none", None))
    @example(case=WebhookCase("follow-without-reply-token", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("unknown-type", 2, 0, "events", "valid", None))
    @example(case=WebhookCase("no-source", 2, 2, "events", "valid", None))
    @example(case=WebhookCase("no-timestamp", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("no-webhook-event-id", 3, 1, "events", "valid", None))
    @example(case=WebhookCase("timestamp-text", 1, 0, "events", "valid", None))
    @example(case=WebhookCase("timestamp-huge", 1, 0, "events", "valid", None))
    @example(case=WebhookCase("type-number", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("source-text", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("text-surrogate", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("text-huge", 2, 1, "events", "valid", "application/octet-stream"))
    @example(case=WebhookCase("deep-40", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("deep-200", 2, 1, "events", "valid", None))
    @example(case=WebhookCase("account-link-odd", 1, 1, "events", "valid", None))
    @example(case=WebhookCase("postback-params-empty-key", 1, 1, "events", "valid", None))
    @example(case=WebhookCase(None, 3, 0, "not-an-event", "valid", None))
    @example(case=WebhookCase(None, 2, 0, "numbers", "valid", None))
    @example(case=WebhookCase(None, 1, 0, "invalid-utf8", "valid", "application/octet-stream"))
    @example(case=WebhookCase(None, 1, 0, "not-json", "valid", None))
    @example(case=WebhookCase(None, 1, 0, "events-object", "valid", None))
    @example(case=WebhookCase(None, 1, 0, "top-level-list", "valid", None))
    def fuzz(case: WebhookCase) -> None:
        fuzz_webhook(local_stack, ledger, case, at_ms)

    ledger = Ledger()
    fuzz()
    check_ledger(local_stack, ledger)
    print(ledger.summary())


# -- engagement links, the tag, the admin API ------------------------------------------------------------

SIGNER = TokenSigner(lambda: LOCAL_TRACKING_SECRET.encode())


def signed(kind: TokenKind, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "kind": kind,
        "dispatch_key": "fuzz#dispatch",
        "customer_id": "cus_fuzz_nobody",
        "channel": "email",
        "url": "https://shop.example.jp/fuzz" if kind is TokenKind.CLICK else None,
        "test": True,  # answered normally, never recorded
    }
    return SIGNER.sign(TrackingToken(**{**fields, **changes}))


def tampered(token: str, at: int) -> str:
    position = at % len(token)
    swap = "A" if token[position] != "A" else "B"
    return token[:position] + swap + token[position + 1 :]


URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
# Tokens CEMS signed (test sends: answered normally, never recorded), and one of a real send to a
# customer who does not exist.
SIGNED = [
    signed(TokenKind.CLICK),
    signed(TokenKind.OPEN),
    signed(TokenKind.UNSUBSCRIBE),
    signed(TokenKind.UNSUBSCRIBE, test=False),
    signed(TokenKind.CLICK, url="https://shop.example.jp/" + "x" * 2000),
]
TOKENS = (
    st.text(alphabet=URL_SAFE, max_size=300).filter(bool)
    | st.sampled_from(["%00", "%2F..%2F", "%E3%81%82", "%ZZ", "a" * 5000, "." * 50])
    | st.sampled_from(SIGNED)
    | st.builds(tampered, st.sampled_from(SIGNED), st.integers(0, 500))
)
ACCEPTS = st.sampled_from(
    [None, "application/json", "text/html", "image/*", "*/*", "image/webp,*/*", "\u00e9/\u00e9"]
)


@dataclass(frozen=True)
class EngageCase:
    route: str  # r, o, u or c
    method: str
    token: str
    accept: str | None
    body: bytes


def is_signed_click(token: str) -> bool:
    try:
        SIGNER.verify(token, TokenKind.CLICK)
    except InvalidToken:
        return False
    return True


# The kind of token each route follows, for requests that carry a good one.
ROUTE_KINDS = {"r": TokenKind.CLICK, "o": TokenKind.OPEN, "u": TokenKind.UNSUBSCRIBE, "c": TokenKind.CONFIRM}
# What a confirmation token carries besides: the address it is for, and an expiry (past or not).
CONFIRMATION = {"address_hash": "0" * 64}


@st.composite
def engage_tokens(draw: st.DrawFn, route: str) -> str:
    """Mostly a hostile token; a third of the time, a good one for the route (so what follows a good
    token is fuzzed too: methods, Accept headers, bodies)."""
    if draw(st.integers(0, 2)) == 0:
        kind = ROUTE_KINDS[route]
        extra: dict[str, Any] = {}
        if kind is TokenKind.CONFIRM:
            extra = {**CONFIRMATION, "expires_at": draw(st.sampled_from([0, 4_000_000_000]))}
        return signed(kind, test=draw(st.booleans()), **extra)
    return draw(TOKENS)


ENGAGE_CASES = st.sampled_from(["r", "o", "u", "c"]).flatmap(
    lambda route: st.builds(
        EngageCase,
        route=st.just(route),
        method=st.sampled_from(["GET", "GET", "GET", "POST", "POST", "HEAD", "PUT"]),
        token=engage_tokens(route),
        accept=ACCEPTS,
        body=st.sampled_from([b"", b"List-Unsubscribe=One-Click", b"\xff\xfe", deep(5000, "array").encode()]),
    )
)


def test_fuzz_engagement_links(local_stack: LocalStackClient) -> None:
    @settings(FUZZ, max_examples=100)
    @given(case=ENGAGE_CASES)
    @example(case=EngageCase("u", "POST", signed(TokenKind.UNSUBSCRIBE, test=False), "application/json", b""))
    @example(case=EngageCase("r", "GET", tampered(signed(TokenKind.CLICK), 10), "application/json", b""))
    @example(case=EngageCase("o", "GET", "a" * 5000, "image/*", b""))
    @example(case=EngageCase("u", "POST", "%ZZ", None, deep(5000, "object").encode()))
    @example(case=EngageCase("r", "GET", signed(TokenKind.OPEN), None, b""))
    @example(case=EngageCase("c", "POST", signed(TokenKind.UNSUBSCRIBE), "application/json", b""))
    @example(case=EngageCase("c", "GET", tampered(signed(TokenKind.UNSUBSCRIBE), 3), "text/html", b""))
    def fuzz(case: EngageCase) -> None:
        headers: dict[str, Any] = {}
        if case.accept is not None:
            headers["Accept"] = case.accept.encode("utf-8")
        if case.method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        answer = send(
            local_stack,
            case.method,
            f"/{case.route}/{case.token}",
            case.body if case.method == "POST" else None,
            headers,
        )
        ledger.answered(answer)
        check(answer, f"{case.method} /{case.route}/{case.token[:80]} accept={case.accept}")
        # Never an open redirect: only a click token CEMS signed is followed.
        if answer.status in (301, 302, 303, 307, 308):
            assert case.route == "r" and is_signed_click(case.token), case

    ledger = Ledger()
    fuzz()
    print(ledger.summary())


# -- on-site messages: the tag's fetch (collect) and its reports (engage) ---------------------------------

WEB_SIGNER = WebTokenSigner(lambda: LOCAL_TRACKING_SECRET.encode())


def web_signed(**changes: Any) -> str:
    """A web token CEMS signed: a preview's (`test`, never recorded), or (test=False) one for a
    customer who does not exist (nothing to record it on)."""
    fields: dict[str, Any] = {
        "owner_id": "cus_fuzz_nobody",
        "dispatch_key": "fuzz#web#1",
        "expires_at": 4_000_000_000,
        "test": True,
    }
    return WEB_SIGNER.sign(WebToken(**{**fields, **changes}))


WEB_TOKENS = (
    TOKENS
    | st.just(web_signed())
    | st.just(web_signed(test=False))
    | st.just(web_signed(expires_at=1))
    | st.builds(tampered, st.just(web_signed(test=False)), st.integers(0, 300))
)
QUERY_TEXT = st.text(max_size=120) | st.sampled_from(["", "a" * 3000, "\x00", "%ZZ", "\ud800"])


@st.composite
def web_queries(draw: st.DrawFn) -> str:
    parts: dict[str, str] = {}
    for name in ("writeKey", "anonymousId", "url", "preview", "userId"):
        if draw(st.booleans()):
            parts[name] = draw(QUERY_TEXT)
    encoded = urllib.parse.urlencode(parts, errors="surrogatepass") if parts else ""
    return draw(
        st.sampled_from([encoded, encoded + "&anonymousId=x&anonymousId=y", "%ZZ=%ZZ", "a=" + "%ff" * 50])
    )


@st.composite
def web_event_bodies(draw: st.DrawFn) -> bytes:
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["token"] = draw(WEB_TOKENS | st.integers() | st.none())
    if draw(st.booleans()):
        document["kind"] = draw(
            st.sampled_from(["shown", "clicked", "dismissed", "", "SHOWN"]) | st.integers()
        )
    if draw(st.booleans()):
        document["button"] = draw(st.integers(-5, 5) | st.text(max_size=5) | st.floats(allow_nan=False))
    raw = json.dumps(document).encode()
    return draw(
        st.sampled_from([raw, raw[: len(raw) // 2], b"\xff\xfe", deep(5000, "object").encode(), b"x" * 9000])
    )


def test_fuzz_web_messages_and_events(local_stack: LocalStackClient) -> None:
    """The fetch answers any query below 500 (a write key in the query or not, any origin); the
    events route answers any body below 500, and only a token CEMS signed for a message not expired
    is honoured (a preview's records nothing; a nobody's has nobody to record on)."""

    @settings(FUZZ, max_examples=100)
    @given(
        query=web_queries(),
        method=st.sampled_from(["GET", "GET", "HEAD", "OPTIONS", "POST"]),
        keyed=st.booleans(),
        origin=st.sampled_from([None, "https://evil.example", "null", "http://localhost"]),
        etag=st.sampled_from([None, '"x"', "*", "W/" + "a" * 3000]),
    )
    @example(query="anonymousId=" + "a" * 100, method="GET", keyed=True, origin=None, etag=None)
    @example(query="preview=" + "A" * 32, method="GET", keyed=True, origin=None, etag="*")
    @example(query="anonymousId=x&url=" + "u" * 5000, method="GET", keyed=True, origin=None, etag=None)
    def fetch(query: str, method: str, keyed: bool, origin: str | None, etag: str | None) -> None:
        if keyed:
            query = f"writeKey={local_stack.write_key}&" + query
        headers: dict[str, Any] = {}
        if origin is not None:
            headers["Origin"] = origin
        if etag is not None:
            headers["If-None-Match"] = etag
        answer = send(local_stack, method, "/v1/web/messages?" + query, None, headers)
        ledger.answered(answer)
        check(answer, f"{method} /v1/web/messages?{query} origin={origin}")
        assert len(answer.body) <= 16_000

    @settings(FUZZ, max_examples=100)
    @given(body=web_event_bodies(), method=st.sampled_from(["POST", "POST", "GET", "OPTIONS", "PUT"]))
    @example(body=json.dumps({"token": web_signed(test=False), "kind": "dismissed"}).encode(), method="POST")
    @example(body=json.dumps({"token": web_signed(expires_at=1), "kind": "shown"}).encode(), method="POST")
    @example(body=json.dumps({"token": tampered(web_signed(), 5), "kind": "clicked"}).encode(), method="POST")
    def report(body: bytes, method: str) -> None:
        answer = send(
            local_stack,
            method,
            "/v1/web/events",
            body if method in ("POST", "PUT") else None,
            {"Content-Type": "text/plain;charset=UTF-8"},
        )
        ledger.answered(answer)
        check(answer, f"{method} /v1/web/events {body[:200]!r}")
        if answer.status == 200 and method == "POST":
            token = json.loads(body)["token"]
            verified = WEB_SIGNER.verify(token, datetime.now(UTC))  # only a good token gets a 200
            assert verified.test or answer.json()["recorded"] is False

    ledger = Ledger()
    fetch()
    report()
    print(ledger.summary())


PATH_PARTS = st.text(alphabet=URL_SAFE + "%", min_size=1, max_size=80)


def test_fuzz_tag_script_and_admin_routes(local_stack: LocalStackClient) -> None:
    @settings(FUZZ, max_examples=50)
    @given(
        target=st.sampled_from(["tag", "scenarios", "report", "customer"]),
        part=PATH_PARTS,
        query=st.sampled_from(
            [
                "",
                "?version=1",
                "?version=0",
                "?version=-1",
                "?version=" + "9" * 50,
                "?format=html",
                "?version=%ff",
            ]
        ),
        method=st.sampled_from(["GET", "DELETE", "POST"]),
    )
    @example(target="tag", part="x", query="?v=" + "9" * 5000, method="GET")
    @example(target="report", part="no-such-scenario", query="?version=" + "9" * 5000, method="GET")
    @example(target="customer", part="cus_fuzz_nobody", query="", method="DELETE")
    def fuzz(target: str, part: str, query: str, method: str) -> None:
        path = {
            "tag": "/tag.js",
            "scenarios": "/admin/scenarios",
            "report": f"/admin/scenarios/{part}/report",
            "customer": f"/admin/customers/{part}",
        }[target]
        if target == "customer" and method == "DELETE" and not part.startswith("cus_fuzz"):
            part = "cus_fuzz_" + part  # never a customer another test made
            path = f"/admin/customers/{part}"
        answer = send(local_stack, method, path + query, None, {"Accept": "application/json"})
        ledger.answered(answer)
        check(answer, f"{method} {path}{query}")
        if target == "tag" and method == "GET":
            assert answer.status == 200 and b"cems" in answer.body

    ledger = Ledger()
    fuzz()
    print(ledger.summary())


CONSOLE_PATHS = st.text(alphabet=URL_SAFE + "%/", min_size=0, max_size=60)


def test_fuzz_console_and_the_admin_customer_routes(local_stack: LocalStackClient) -> None:
    """The console's page and assets, its sign-in (any bytes), its API without a valid token (the
    local JWT authorizer answers 401 before the function runs), and the IAM admin API's customer and
    audience routes (the local stack does not check IAM): every answer below 500, errors naming a
    field or limit."""

    @settings(FUZZ, max_examples=120)
    @given(
        target=st.sampled_from(
            ["page", "asset", "sign-in", "api", "find", "view", "export", "audience", "audience-run"]
        ),
        part=CONSOLE_PATHS,
        body=st.one_of(
            st.binary(max_size=3000),
            st.builds(
                lambda u, p: json.dumps({"username": u, "password": p}).encode(),
                st.text(max_size=140),
                st.text(max_size=300),
            ),
        ),
        token=st.sampled_from(["", "Bearer ", "Bearer x.y.z", "Bearer " + "A" * 3000, "Basic Zm9vOmJhcg=="]),
        method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    )
    @example(
        target="sign-in",
        part="",
        body=b'{"username": "09012345678", "password": "x"}',
        token="",
        method="POST",
    )
    @example(target="sign-in", part="", body=deep(5000, "object").encode(), token="", method="POST")
    @example(target="api", part="customers/cus_x?unmasked=true", body=b"", token="Bearer x.y.z", method="GET")
    @example(target="audience", part="", body=b'{"id": 3}', token="", method="POST")
    @example(target="find", part="email=%ff", body=b"", token="", method="GET")
    def fuzz(target: str, part: str, body: bytes, token: str, method: str) -> None:
        quoted = urllib.parse.quote(part, safe="/%=&?")
        path, send_body = {
            "page": ("/console", None),
            "asset": (f"/console/{quoted or 'x'}", None),
            "sign-in": ("/admin/console/sign-in", body),
            "api": (f"/admin/console/{quoted or 'me'}", body if method in ("POST", "PUT") else None),
            "find": (f"/admin/customers?{quoted}", None),
            "view": (f"/admin/customers/{quoted.replace('/', '') or 'x'}", None),
            "export": (f"/admin/customers/{quoted.replace('/', '') or 'x'}/export", None),
            "audience": ("/admin/audience", body),
            "audience-run": (f"/admin/audience/{quoted.replace('/', '') or 'x'}", None),
        }[target]
        if target == "sign-in":
            method = "POST"
        elif target in ("find", "view", "export", "page", "asset", "audience-run"):
            method = "GET"
        elif target == "audience":
            method = "POST"
        headers: dict[str, Any] = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        answer = send(local_stack, method, path, send_body, headers)
        ledger.answered(answer)
        check(answer, f"{method} {path}")
        if target == "api":
            # No token the authorizer verifies: API Gateway's own 401, never the function's data.
            assert answer.status in (401, 404) and answer.json() in (
                {"message": "Unauthorized"},
                {"message": "Not Found"},
            ), answer
        if target == "sign-in":
            assert answer.status in (400, 401, 413), answer

    ledger = Ledger()
    fuzz()
    print(ledger.summary())


# -- over every route and over the whole run -------------------------------------------------------------

FUZZED_ROUTES = {
    "ANY /v1/{kind}",
    "ANY /v1/line/link",
    "ANY /v1/web/messages",
    "ANY /v1/web/events",
    "GET /tag.js",
    "POST /line/webhook",
    "GET /r/{token}",
    "GET /o/{token}",
    "GET /u/{token}",
    "POST /u/{token}",
    "GET /c/{token}",
    "POST /c/{token}",
    "GET /admin/scenarios",
    "GET /admin/scenarios/{id}/report",
    "DELETE /admin/customers/{id}",
    "GET /admin/customers",
    "GET /admin/customers/{id}",
    "GET /admin/customers/{id}/export",
    "POST /admin/audience",
    "GET /admin/audience/{run}",
    "GET /console",
    "GET /console/{asset}",
    "POST /admin/console/sign-in",
    "ANY /admin/console/{proxy+}",
}
# The console's routes under /admin/console/: sign-in is public (it checks the password itself), the
# rest need an operator's ID token (the JWT authorizer); every other /admin/ route needs IAM.
CONSOLE_SIGN_IN = "POST /admin/console/sign-in"
CONSOLE_API = "ANY /admin/console/{proxy+}"


def http_routes() -> Iterator[tuple[str, dict[str, Any]]]:
    template = Template.load(ROOT / "template.yaml")
    for spec in function_specs(template):
        for event in spec.events.values():
            if event.get("Type") == "HttpApi":
                props = event.get("Properties", {})
                yield f"{str(props.get('Method', 'ANY')).upper()} {props.get('Path', '$default')}", props


def test_every_public_route_is_fuzzed_and_the_admin_api_needs_iam() -> None:
    routes = dict(http_routes())
    assert set(routes) == FUZZED_ROUTES, "a route was added or removed: fuzz it here"
    # The local stack does not emulate IAM authorisation (its admin routes answer anyone, for `cems
    # report` on a laptop); deployed, an unsigned request never reaches the function.
    for route, props in routes.items():
        authorizer = (props.get("Auth") or {}).get("Authorizer")
        if route == CONSOLE_API:
            assert authorizer == "OperatorJwt", route
        elif route == CONSOLE_SIGN_IN:
            assert authorizer is None, route
        else:
            assert (authorizer == "AWS_IAM") == (" /admin/" in route), route


def test_no_line_the_stack_printed_is_longer_than_the_log_limit(local_stack: LocalStackClient) -> None:
    """Over everything this module's stack printed, the fuzz included."""
    too_long = [
        f"line {number}: {len(line.encode())} bytes: {line[:200]}"
        for number, line in enumerate(local_stack.running.transcript, 1)
        if len(line.encode("utf-8", "backslashreplace")) > MAX_LINE_BYTES
    ]
    assert not too_long, "\n".join(too_long[:10])


def test_the_fuzz_logged_no_personal_data_or_secret(local_stack: LocalStackClient) -> None:
    """Odd input makes for odd log lines: none of them may carry what a log must never hold."""
    found = privacy_findings(local_stack)
    assert not found, "\n".join(found[:20])
