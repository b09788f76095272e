"""Engagement settings: where the tracking endpoints live and where the secret signing their tokens
is. Read from the environment by `cems.settings` (the one place that reads it).

The secret is an SSM SecureString read through Powertools parameters on first use (cached, so a
rotated secret is picked up without a deploy); in tests `CEMS_TRACKING_SECRET` holds it, and only the
local stack (CEMS_LOCAL=1) falls back to `LOCAL_TRACKING_SECRET`. Anywhere else, no secret
configured stops the function at init.
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from typing import Self

from cems.settings import BaseUrl, SecretSetting, SecretValue, Settings, SettingsArea, read_secret, variables

LOCAL_TRACKING_SECRET = "local-tracking-secret"  # noqa: S105 - the documented local default
LOCAL_ENGAGE_BASE_URL = "http://127.0.0.1:3000"
TRACKING_SECRET = SecretSetting("CEMS_TRACKING_SECRET", "TRACKING_SECRET_PARAMETER", LOCAL_TRACKING_SECRET)


class EngagementSettings(SettingsArea):
    """Where `engage` answers and where the secret signing its tokens is."""

    model_config = variables(
        base_url="ENGAGE_BASE_URL",
        tracking_secret_value=TRACKING_SECRET.env_name,
        tracking_secret_parameter=TRACKING_SECRET.parameter_env_name,
        shop_name="EMAIL_FROM_NAME",
        local="local",
    )
    # Without a trailing slash: tokens go in `{base_url}/r/<token>` and so on.
    base_url: BaseUrl = LOCAL_ENGAGE_BASE_URL
    tracking_secret_value: SecretValue = None
    tracking_secret_parameter: str | None = None
    # The sender's name shown on the unsubscribe pages and in confirmation subjects, if given.
    shop_name: str | None = None
    local: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Refuses (MissingSecretSetting) without the tracking secret, outside the local stack."""
        settings.require_secrets(TRACKING_SECRET)
        return settings.validated(cls, local=settings.local)

    def secret(self) -> bytes:
        """The token signing key (read on each call; Powertools caches the SSM read)."""
        value = read_secret(
            TRACKING_SECRET, self.tracking_secret_value, self.tracking_secret_parameter, self.local
        )
        return value.encode("utf-8")
