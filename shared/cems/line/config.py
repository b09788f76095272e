"""LINE settings: the channel's API and link pages, where its secret and access token are, and the
documented local values. Read from the environment by `cems.settings` (the one place that reads it).

The channel secret and access token are read through Powertools parameters on first use (cached, so
a rotated token is picked up without a deploy); in tests `CEMS_LINE_CHANNEL_SECRET` /
`CEMS_LINE_CHANNEL_ACCESS_TOKEN` hold them. Only the local stack (CEMS_LOCAL=1) falls back to the
public local values: anywhere else a secret configured neither way stops the function at init.
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from typing import Self

from cems.settings import (
    BaseUrl,
    Positive,
    SecretSetting,
    SecretValue,
    Settings,
    SettingsArea,
    read_secret,
    variables,
)

LOCAL_CHANNEL_SECRET = "local-channel-secret"  # noqa: S105 - the documented local default
LOCAL_CHANNEL_ACCESS_TOKEN = "local-channel-access-token"  # noqa: S105 - the documented local default
# LINE's account-link page; the user's LINE app opens it with linkToken and nonce.
LINE_ACCOUNT_LINK_URL = "https://access.line.me/dialog/bot/accountLink"
# Every LINE call has a time-out: (connect, read) seconds. The SDK has none by default.
LINE_REQUEST_TIMEOUT = (3.0, 10.0)

LINE_CHANNEL_SECRET = SecretSetting(
    "CEMS_LINE_CHANNEL_SECRET", "LINE_CHANNEL_SECRET_PARAMETER", LOCAL_CHANNEL_SECRET
)
LINE_CHANNEL_ACCESS_TOKEN = SecretSetting(
    "CEMS_LINE_CHANNEL_ACCESS_TOKEN", "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER", LOCAL_CHANNEL_ACCESS_TOKEN
)


class LineSettings(SettingsArea):
    """The LINE channel: API and link pages, and where its two secrets are."""

    model_config = variables(
        api_url="CEMS_LINE_API_URL",
        account_link_url="CEMS_LINE_ACCOUNT_LINK_URL",
        link_page_url="CEMS_LINE_LINK_PAGE_URL",
        retry_base_seconds="CEMS_LINE_RETRY_BASE_SECONDS",
        channel_secret_value=LINE_CHANNEL_SECRET.env_name,
        channel_secret_parameter=LINE_CHANNEL_SECRET.parameter_env_name,
        channel_access_token_value=LINE_CHANNEL_ACCESS_TOKEN.env_name,
        channel_access_token_parameter=LINE_CHANNEL_ACCESS_TOKEN.parameter_env_name,
        local="local",
    )
    api_url: BaseUrl = "https://api.line.me"
    account_link_url: str = LINE_ACCOUNT_LINK_URL
    link_page_url: str = "http://localhost:3000/demo/line-link.html"
    # Backoff for LINE's 429/5xx: base * 2^(receive count - 1), jittered, capped (cems.line.sender).
    retry_base_seconds: Positive = 2.0
    channel_secret_value: SecretValue = None
    channel_secret_parameter: str | None = None
    channel_access_token_value: SecretValue = None
    channel_access_token_parameter: str | None = None
    local: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Refuses (MissingSecretSetting) when a LINE secret is configured neither way, outside the
        local stack: every function that talks to LINE or checks its signatures asks at init."""
        settings.require_secrets(LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN)
        return settings.validated(cls, local=settings.local)

    def channel_secret(self) -> str:
        return read_secret(
            LINE_CHANNEL_SECRET, self.channel_secret_value, self.channel_secret_parameter, self.local
        )

    def channel_access_token(self) -> str:
        return read_secret(
            LINE_CHANNEL_ACCESS_TOKEN,
            self.channel_access_token_value,
            self.channel_access_token_parameter,
            self.local,
        )
