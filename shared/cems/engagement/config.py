"""Engagement settings: where the tracking endpoints live and the secret that signs their tokens.

The secret is an SSM SecureString read through Powertools parameters (cached for
`SECRET_CACHE_SECONDS`, so a rotated secret is picked up without a deploy); in tests
`CEMS_TRACKING_SECRET` takes its place, and only the local stack (CEMS_LOCAL=1) falls back to
`LOCAL_TRACKING_SECRET`. Anywhere else, no secret configured stops the function at init.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The same lookup as the LINE credentials: its variable, the local default on the local stack, SSM.
from cems.line.config import SecretSetting, credential, require_secret_settings

LOCAL_TRACKING_SECRET = "local-tracking-secret"  # noqa: S105 - the documented local default
TRACKING_SECRET = SecretSetting("CEMS_TRACKING_SECRET", "TRACKING_SECRET_PARAMETER", LOCAL_TRACKING_SECRET)
LOCAL_ENGAGE_BASE_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class EngagementSettings:
    # Where `engage` answers, without a trailing slash: tokens go in `{base_url}/r/<token>` and so on.
    base_url: str
    tracking_secret_parameter: str | None
    # The sender's name shown on the unsubscribe pages (send_email's EMAIL_FROM_NAME), if given.
    shop_name: str | None = None

    @classmethod
    def from_env(cls) -> EngagementSettings:
        require_secret_settings(TRACKING_SECRET)
        env = os.environ
        return cls(
            base_url=env.get("ENGAGE_BASE_URL", LOCAL_ENGAGE_BASE_URL).rstrip("/"),
            tracking_secret_parameter=env.get("TRACKING_SECRET_PARAMETER") or None,
            shop_name=env.get("EMAIL_FROM_NAME") or None,
        )

    def secret(self) -> bytes:
        """The token signing key (read on each call; Powertools caches the SSM read)."""
        value = credential(TRACKING_SECRET, self.tracking_secret_parameter)
        return value.encode("utf-8")
