"""LINE channel settings and credentials: SSM SecureString in the cloud, environment variables locally.

The channel secret and access token are read through Powertools parameters (cached for
`SECRET_CACHE_SECONDS`), so a rotated token is picked up without a deploy. In tests (and wherever
the secret is set directly) `CEMS_LINE_CHANNEL_SECRET` / `CEMS_LINE_CHANNEL_ACCESS_TOKEN` take their
place. Only the local stack (CEMS_LOCAL=1) falls back to the documented public local defaults:
anywhere else a secret with neither its value nor its SSM parameter configured stops the function at
init (`MissingSecretSetting`), because a public default would let anyone sign webhooks or links.
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


class MissingSecretSetting(RuntimeError):
    """A secret has no value and no SSM parameter configured, outside the local stack."""


@dataclass(frozen=True)
class SecretSetting:
    """Where one secret comes from: its value (`env_name`), else the SSM SecureString that the
    `parameter_env_name` variable names; the public `local_default` only on the local stack."""

    env_name: str
    parameter_env_name: str
    local_default: str

    def missing(self) -> str:
        return (
            f"{self.parameter_env_name} (the SSM SecureString holding it) or {self.env_name} must be set; "
            "the public local default is used only on the local stack (CEMS_LOCAL=1)"
        )


LINE_CHANNEL_SECRET = SecretSetting(
    "CEMS_LINE_CHANNEL_SECRET", "LINE_CHANNEL_SECRET_PARAMETER", LOCAL_CHANNEL_SECRET
)
LINE_CHANNEL_ACCESS_TOKEN = SecretSetting(
    "CEMS_LINE_CHANNEL_ACCESS_TOKEN", "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER", LOCAL_CHANNEL_ACCESS_TOKEN
)


def on_local_stack() -> bool:
    return os.environ.get("CEMS_LOCAL") == "1"


def require_secret_settings(*settings: SecretSetting) -> None:
    """Refuses (MissingSecretSetting, naming each setting) when a secret has neither its value nor its
    SSM parameter configured, unless on the local stack. Settings call it as they are built, which is
    at a function's init, so a misconfigured function never starts rather than signing with a public
    default."""
    if on_local_stack():
        return
    missing = [
        s for s in settings if not os.environ.get(s.env_name) and not os.environ.get(s.parameter_env_name)
    ]
    if missing:
        raise MissingSecretSetting("; ".join(s.missing() for s in missing))


@dataclass(frozen=True)
class LineSettings:
    api_url: str
    account_link_url: str
    link_page_url: str
    channel_secret_parameter: str | None
    channel_access_token_parameter: str | None

    @classmethod
    def from_env(cls) -> LineSettings:
        require_secret_settings(LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN)
        env = os.environ
        return cls(
            api_url=env.get("CEMS_LINE_API_URL", "https://api.line.me").rstrip("/"),
            account_link_url=env.get("CEMS_LINE_ACCOUNT_LINK_URL", LINE_ACCOUNT_LINK_URL),
            link_page_url=env.get("CEMS_LINE_LINK_PAGE_URL", "http://localhost:3000/demo/line-link.html"),
            channel_secret_parameter=env.get("LINE_CHANNEL_SECRET_PARAMETER"),
            channel_access_token_parameter=env.get("LINE_CHANNEL_ACCESS_TOKEN_PARAMETER"),
        )

    def channel_secret(self) -> str:
        return credential(LINE_CHANNEL_SECRET, self.channel_secret_parameter)

    def channel_access_token(self) -> str:
        return credential(LINE_CHANNEL_ACCESS_TOKEN, self.channel_access_token_parameter)


def credential(setting: SecretSetting, parameter: str | None) -> str:
    """The secret's own variable if set; on the local stack, the local default (it never asks SSM);
    else the SSM parameter (decrypted, cached). Nothing configured: MissingSecretSetting, never the
    public local default."""
    value = os.environ.get(setting.env_name)
    if value:
        return value
    if on_local_stack():
        return setting.local_default
    if not parameter:
        raise MissingSecretSetting(setting.missing())
    from aws_lambda_powertools.utilities import parameters

    fetched = parameters.get_parameter(parameter, decrypt=True, max_age=SECRET_CACHE_SECONDS)
    if not isinstance(fetched, str) or not fetched:
        raise RuntimeError(f"SSM parameter {parameter} is empty")
    return fetched
