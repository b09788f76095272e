"""Every line the local stack printed during the whole e2e run (its functions' logs included) holds
no email address, LINE user id, access token, channel secret, tracking token, the local site's secret
server key or its identity secret.

The file is named to run after the other e2e modules, which share one stack (tests/e2e/conftest.py):
by then the stack has collected events, answered LINE webhooks, linked accounts, sent LINE messages
and mail, redirected clicks, counted opens, unsubscribed and suppressed bounces."""

from __future__ import annotations

import re

import pytest
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.line.config import LOCAL_CHANNEL_ACCESS_TOKEN, LOCAL_CHANNEL_SECRET
from cems.local.stack import DEFAULT_IDENTITY_SECRET, DEFAULT_SECRET_KEY

from tests.e2e.conftest import LocalStackClient

pytestmark = pytest.mark.e2e

EMAIL_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
LINE_USER_ID = re.compile(r"\bU[0-9a-f]{32}\b")
# Click, open and unsubscribe links carry a signed token after /r/, /o/ or /u/.
TRACKING_PATH = re.compile(r"/[rouc]/[A-Za-z0-9_-]{20,}")
SECRETS = (
    LOCAL_CHANNEL_ACCESS_TOKEN,
    LOCAL_CHANNEL_SECRET,
    LOCAL_TRACKING_SECRET,
    DEFAULT_SECRET_KEY,
    DEFAULT_IDENTITY_SECRET,
)


def test_no_personal_data_or_secret_in_any_log_line(local_stack: LocalStackClient) -> None:
    # And the ones this stack holds, should CEMS_SECRET_KEY / CEMS_IDENTITY_SECRET have chosen others.
    secrets = (*SECRETS, local_stack.secret_key, local_stack.identity_secret)
    lines = local_stack.running.transcript
    assert len(lines) > 50, "the stack printed almost nothing: is logging on?"
    found = []
    for number, line in enumerate(lines, 1):
        reasons = [
            name
            for name, hit in (
                ("email address", EMAIL_ADDRESS.search(line)),
                ("LINE user id", LINE_USER_ID.search(line)),
                ("tracking token", TRACKING_PATH.search(line)),
                ("secret", any(secret in line for secret in secrets)),
            )
            if hit
        ]
        if reasons:
            found.append(f"line {number} ({', '.join(reasons)}): {line[:300]}")
    assert not found, "\n".join(found[:20])
