"""LINE channel settings and credentials: SSM SecureString in the cloud, environment variables locally.

The channel secret and access token are read through Powertools parameters (cached for
`SECRET_CACHE_SECONDS`), so a rotated token is picked up without a deploy. Locally (and in tests)
`CEMS_LINE_CHANNEL_SECRET` / `CEMS_LINE_CHANNEL_ACCESS_TOKEN` take their place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LOCAL_CHANNEL_SECRET = "local-channel-secret"  # noqa: S105 - the documented local default
LOCAL_CHANNEL_ACCESS_TOKEN = "local-channel-access-token"  # noqa: S105 - the documented local default
# LINE's account-link page; the user's LINE app opens it with linkToken and nonce.
LINE_ACCOUNT_LINK_URL = "https://access.line.me/dialog/bot/accountLink"
SECRET_CACHE_SECONDS = 300
# Every LINE call has a time-out: (connect, read) seconds. The SDK has none by default.
LINE_REQUEST_TIMEOUT = (3.0, 10.0)


@dataclass(frozen=True)
class LineSettings:
    api_url: str
    account_link_url: str
    link_page_url: str
    channel_secret_parameter: str | None
    channel_access_token_parameter: str | None

    @classmethod
    def from_env(cls) -> LineSettings:
        env = os.environ
        return cls(
            api_url=env.get("CEMS_LINE_API_URL", "https://api.line.me").rstrip("/"),
            account_link_url=env.get("CEMS_LINE_ACCOUNT_LINK_URL", LINE_ACCOUNT_LINK_URL),
            link_page_url=env.get("CEMS_LINE_LINK_PAGE_URL", "http://localhost:3000/demo/line-link.html"),
            channel_secret_parameter=env.get("LINE_CHANNEL_SECRET_PARAMETER"),
            channel_access_token_parameter=env.get("LINE_CHANNEL_ACCESS_TOKEN_PARAMETER"),
        )

    def channel_secret(self) -> str:
        return _credential("CEMS_LINE_CHANNEL_SECRET", self.channel_secret_parameter, LOCAL_CHANNEL_SECRET)

    def channel_access_token(self) -> str:
        return _credential(
            "CEMS_LINE_CHANNEL_ACCESS_TOKEN", self.channel_access_token_parameter, LOCAL_CHANNEL_ACCESS_TOKEN
        )


def _credential(env_name: str, parameter: str | None, local_default: str) -> str:
    """The environment variable if set; else the SSM parameter (decrypted, cached); else the local
    default, which only the local stack and tests (CEMS_LOCAL=1 or no parameter configured) get."""
    value = os.environ.get(env_name)
    if value:
        return value
    if parameter and os.environ.get("CEMS_LOCAL") != "1":
        from aws_lambda_powertools.utilities import parameters

        fetched = parameters.get_parameter(parameter, decrypt=True, max_age=SECRET_CACHE_SECONDS)
        if not isinstance(fetched, str) or not fetched:
            raise RuntimeError(f"SSM parameter {parameter} is empty")
        return fetched
    return local_default
