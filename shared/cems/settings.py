"""Every setting CEMS reads from its environment: typed, with its default, read once at a function's init.

This is the only module that reads `os.environ` for the functions (the local stack and the CLI keep
their own options). `Settings.from_environ()` takes one snapshot of the environment; each area (tables,
retention, queues, the scenario engine, LINE, engagement, email) is validated from that snapshot the
first time a builder in `cems.wiring` asks for it, which is during init, so a bad value stops the
function before its first event, with a message naming the variable (`SettingsError`). Areas a
function does not use are never validated: `collect` does not need the email sender's settings.

Secrets are not settings values: the environment names where they are (an SSM SecureString's name, or
in tests the value itself) and they are read on first use through Powertools parameters, cached for
`SECRET_CACHE_SECONDS`, so a rotated secret needs no deploy. A function whose secret is configured
neither way refuses to start (`MissingSecretSetting`) unless it runs on the local stack
(CEMS_LOCAL=1), which alone gets the documented public local values.

Why plain pydantic models validated from `os.environ`, not pydantic-settings: Lambda cold start is
benchmarked, and `import pydantic_settings` (2.16.3) costs 22-28 ms more in a fresh interpreter that
has already imported pydantic, Powertools and the collect path (`python -X importtime`; it brings in
python-dotenv, argparse-based CLI parsing and its cloud secret sources, none of which CEMS uses).
Its one feature CEMS would use, reading fields from variables, is a `validation_alias` per field
here. pydantic itself is loaded by every function already, and `defer_build` keeps the areas a
function never reads from costing a schema build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from functools import cached_property
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from cems.engagement.config import LOCAL_ENGAGE_BASE_URL, LOCAL_TRACKING_SECRET
from cems.line.config import LINE_ACCOUNT_LINK_URL, LOCAL_CHANNEL_ACCESS_TOKEN, LOCAL_CHANNEL_SECRET

SECRET_CACHE_SECONDS = 300
# Also the stores' own defaults (cems.scenario.store, cems.scenario.broadcast), so written here once.
DEFAULT_DUE_SHARDS = 16
DEFAULT_BROADCAST_SEGMENTS = 16
# The local stack's variable; only exactly "1" counts ("true" in a copied .env must not unlock the
# public local secrets).
LOCAL_VARIABLE = "CEMS_LOCAL"


class SettingsError(ValueError):
    """A setting is missing or has a bad value; the message names the variable."""


class EmailSettingsError(SettingsError):
    """A required email setting is missing or would make every mail fail."""


class MissingSecretSetting(RuntimeError):
    """A secret has no value and no SSM parameter configured, outside the local stack."""


# ------------------------------------------------------------------------------------------------ secrets


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
TRACKING_SECRET = SecretSetting("CEMS_TRACKING_SECRET", "TRACKING_SECRET_PARAMETER", LOCAL_TRACKING_SECRET)


def read_secret(setting: SecretSetting, value: str | None, parameter: str | None, local: bool) -> str:
    """The secret's own value if set; on the local stack, the local default (it never asks SSM); else
    the SSM parameter (decrypted, cached). Nothing configured: MissingSecretSetting, never the public
    local default."""
    if value:
        return value
    if local:
        return setting.local_default
    if not parameter:
        raise MissingSecretSetting(setting.missing())
    # Imported here: most invocations never read a secret, and Powertools parameters pulls in its
    # SSM client machinery.
    from aws_lambda_powertools.utilities import parameters

    fetched = parameters.get_parameter(parameter, decrypt=True, max_age=SECRET_CACHE_SECONDS)
    if not isinstance(fetched, str) or not fetched:
        raise RuntimeError(f"SSM parameter {parameter} is empty")
    return fetched


# ------------------------------------------------------------------------------------------------ areas


class _Area(BaseModel):
    """One area's settings. Fields are read from the variables their `validation_alias` names; built
    by hand (tests), they take their field names."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, defer_build=True)


def _without_trailing_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


# A base URL that paths are appended to.
BaseUrl = Annotated[str, BeforeValidator(_without_trailing_slash)]
Days = Annotated[int, Field(ge=1)]


class Tables(_Area):
    """The DynamoDB tables (template.yaml passes their generated names)."""

    customers: str = Field("CustomersTable", validation_alias="CUSTOMERS_TABLE")
    events: str = Field("EventsTable", validation_alias="EVENTS_TABLE")
    sites: str = Field("SitesTable", validation_alias="SITES_TABLE")
    idempotency: str = Field("IdempotencyTable", validation_alias="IDEMPOTENCY_TABLE")
    journeys: str = Field("JourneysTable", validation_alias="JOURNEYS_TABLE")
    deliveries: str = Field("DeliveriesTable", validation_alias="DELIVERIES_TABLE")


class Retention(_Area):
    """How long things are kept and cached."""

    event_days: Days = Field(395, validation_alias="CEMS_EVENT_RETENTION_DAYS")
    # How long a messageId is remembered for de-duplication; client retries come within minutes,
    # analytics-python retries for at most a few hours, so a week is generous.
    dedupe_days: Days = Field(7, validation_alias="CEMS_DEDUPE_DAYS")
    delivery_days: Days = Field(395, validation_alias="CEMS_DELIVERY_RETENTION_DAYS")
    site_cache_seconds: float = Field(60.0, ge=0, validation_alias="CEMS_SITE_CACHE_SECONDS")


class Queues(_Area):
    """SQS queue URLs (empty where a function never sends to that queue)."""

    line_send: str = Field("", validation_alias="LINE_SEND_QUEUE_URL")
    email_send: str = Field("", validation_alias="EMAIL_SEND_QUEUE_URL")
    broadcast: str = Field("", validation_alias="BROADCAST_QUEUE_URL")


Cap = Annotated[int, Field(ge=1)] | None


class EngineSettings(_Area):
    """The scenario engine: the due index, broadcast fan-out and the global frequency caps."""

    # Raise only: an enrolment keeps the shard it was written with, and tick reads shards 0..N-1.
    due_shards: int = Field(DEFAULT_DUE_SHARDS, ge=1, validation_alias="CEMS_DUE_SHARDS")
    broadcast_segments: int = Field(
        DEFAULT_BROADCAST_SEGMENTS, ge=1, validation_alias="CEMS_BROADCAST_SEGMENTS"
    )
    # Sends per customer per Tokyo day / ISO week across all scenarios; unset keeps the default of
    # cems.scenario.model.ChannelCap (the one place those defaults are written).
    line_cap_per_day: Cap = Field(None, validation_alias="CEMS_CAP_LINE_PER_DAY")
    line_cap_per_week: Cap = Field(None, validation_alias="CEMS_CAP_LINE_PER_WEEK")
    email_cap_per_day: Cap = Field(None, validation_alias="CEMS_CAP_EMAIL_PER_DAY")
    email_cap_per_week: Cap = Field(None, validation_alias="CEMS_CAP_EMAIL_PER_WEEK")

    def caps(self) -> dict[str, dict[str, int]]:
        """The caps set, by channel and period (`per_day`, `per_week`); an unset one is left out."""
        caps: dict[str, dict[str, int]] = {}
        for channel in ("line", "email"):
            for period in ("day", "week"):
                value = getattr(self, f"{channel}_cap_per_{period}")
                if value is not None:
                    caps.setdefault(channel, {})[f"per_{period}"] = value
        return caps


class LineSettings(_Area):
    """The LINE channel: API and link pages, and where its two secrets are."""

    api_url: BaseUrl = Field("https://api.line.me", validation_alias="CEMS_LINE_API_URL")
    account_link_url: str = Field(LINE_ACCOUNT_LINK_URL, validation_alias="CEMS_LINE_ACCOUNT_LINK_URL")
    link_page_url: str = Field(
        "http://localhost:3000/demo/line-link.html", validation_alias="CEMS_LINE_LINK_PAGE_URL"
    )
    # Backoff for LINE's 429/5xx: base * 2^(receive count - 1), jittered, capped (cems.line.sender).
    retry_base_seconds: float = Field(2.0, gt=0, validation_alias="CEMS_LINE_RETRY_BASE_SECONDS")
    channel_secret_value: str | None = Field(None, repr=False, validation_alias="CEMS_LINE_CHANNEL_SECRET")
    channel_secret_parameter: str | None = Field(None, validation_alias="LINE_CHANNEL_SECRET_PARAMETER")
    channel_access_token_value: str | None = Field(
        None, repr=False, validation_alias="CEMS_LINE_CHANNEL_ACCESS_TOKEN"
    )
    channel_access_token_parameter: str | None = Field(
        None, validation_alias="LINE_CHANNEL_ACCESS_TOKEN_PARAMETER"
    )
    local: bool = False

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


class EngagementSettings(_Area):
    """Where `engage` answers and where the secret signing its tokens is."""

    # Without a trailing slash: tokens go in `{base_url}/r/<token>` and so on.
    base_url: BaseUrl = Field(LOCAL_ENGAGE_BASE_URL, validation_alias="ENGAGE_BASE_URL")
    tracking_secret_value: str | None = Field(None, repr=False, validation_alias="CEMS_TRACKING_SECRET")
    tracking_secret_parameter: str | None = Field(None, validation_alias="TRACKING_SECRET_PARAMETER")
    # The sender's name shown on the unsubscribe pages and in confirmation subjects, if given.
    shop_name: str | None = Field(None, validation_alias="EMAIL_FROM_NAME")
    local: bool = False

    def secret(self) -> bytes:
        """The token signing key (read on each call; Powertools caches the SSM read)."""
        value = read_secret(
            TRACKING_SECRET, self.tracking_secret_value, self.tracking_secret_parameter, self.local
        )
        return value.encode("utf-8")


# Japan's Act on Specified Electronic Mail (特定電子メール法) asks every marketing mail to name the
# sender, its postal address and a contact for complaints, so these are required: send_email started
# without them fails at init (every message waits in the queue) rather than mailing without them.
# Only the local stack gets these documented sample values.
LOCAL_EMAIL_DEFAULTS = {
    "EMAIL_FROM_ADDRESS": "shop@example.jp",
    "EMAIL_FROM_NAME": "茶寮みどり",
    "EMAIL_POSTAL_ADDRESS": "〒100-0001 東京都千代田区千代田1-1 (1-1 Chiyoda, Chiyoda-ku, Tokyo, Japan)",
    "EMAIL_CONTACT": "support@example.jp",
    "ENGAGE_BASE_URL": LOCAL_ENGAGE_BASE_URL,
}


class EmailSettings(_Area):
    """The email sender: who mails, the footer the law asks for, and where its links point."""

    from_address: str = Field(validation_alias="EMAIL_FROM_ADDRESS")  # a verified SES identity
    from_name: str = Field(validation_alias="EMAIL_FROM_NAME")  # the shop's name; may be Japanese
    postal_address: str = Field(validation_alias="EMAIL_POSTAL_ADDRESS")  # in every footer
    contact: str = Field(validation_alias="EMAIL_CONTACT")  # for enquiries and complaints
    # SES configuration set: event publishing (bounces, complaints, ...).
    configuration_set: str | None = Field(None, validation_alias="SES_CONFIGURATION_SET")
    # The engage API's base URL, no trailing slash (links, pixel, unsubscribe).
    engage_base_url: BaseUrl = Field(validation_alias="ENGAGE_BASE_URL")
    # Exponential backoff for SES throttling: base * 2^(receive count - 1), jittered, capped.
    retry_base_seconds: float = Field(2.0, gt=0, validation_alias="CEMS_EMAIL_RETRY_BASE_SECONDS")

    def check(self) -> None:
        """Settings that would make every mail fail are refused at init, not mail by mail."""
        try:
            sender = Address(display_name=self.from_name, addr_spec=self.from_address)
        except (ValueError, HeaderParseError, IndexError) as exc:
            raise EmailSettingsError(
                f"EMAIL_FROM_ADDRESS / EMAIL_FROM_NAME are not a valid sender: {exc}"
            ) from None
        if not sender.domain:
            raise EmailSettingsError("EMAIL_FROM_ADDRESS needs a domain (shop@example.jp)")
        if not self.engage_base_url.startswith(("https://", "http://")):
            raise EmailSettingsError("ENGAGE_BASE_URL must be an http(s) URL (https in the cloud)")


# ----------------------------------------------------------------------------------------------- settings

Area = TypeVar("Area", bound=_Area)


class Settings:
    """One function's settings, from one snapshot of its environment; each area validated when first
    asked for (by its builder in cems.wiring, at init)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        # Surrounding blanks are dropped and an empty variable counts as unset: a template parameter
        # left empty ("") means "use the default", as it always has for the optional ones.
        self._env = {name: value.strip() for name, value in env.items() if value.strip()}
        self.local = self._env.get(LOCAL_VARIABLE) == "1"

    @classmethod
    def from_environ(cls) -> Settings:
        """The process environment, read now (each function reads it once, at init)."""
        return cls(os.environ)

    def _area(self, model: type[Area], **extra: Any) -> Area:
        try:
            return model.model_validate({**self._env, **extra})
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    @cached_property
    def tables(self) -> Tables:
        return self._area(Tables)

    @cached_property
    def retention(self) -> Retention:
        return self._area(Retention)

    @cached_property
    def queues(self) -> Queues:
        return self._area(Queues)

    @cached_property
    def engine(self) -> EngineSettings:
        return self._area(EngineSettings)

    @cached_property
    def line(self) -> LineSettings:
        """Refuses (MissingSecretSetting) when a LINE secret is configured neither way, outside the
        local stack: every function that talks to LINE or checks its signatures asks at init."""
        self.require_secrets(LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN)
        return self._area(LineSettings, local=self.local)

    @cached_property
    def engagement(self) -> EngagementSettings:
        """Refuses (MissingSecretSetting) without the tracking secret, outside the local stack."""
        self.require_secrets(TRACKING_SECRET)
        return self._area(EngagementSettings, local=self.local)

    @cached_property
    def email(self) -> EmailSettings:
        """The sender's settings; outside the local stack the law's sender name, postal address and
        contact (and ENGAGE_BASE_URL, https) are required."""
        values = dict(self._env)
        required = ("EMAIL_FROM_ADDRESS", "EMAIL_FROM_NAME", "EMAIL_POSTAL_ADDRESS", "EMAIL_CONTACT")
        missing = [name for name in (*required, "ENGAGE_BASE_URL") if name not in values]
        if missing and not self.local:
            raise EmailSettingsError(
                f"email settings missing: {', '.join(missing)} (the sender's name, postal address and "
                "contact are required in every marketing mail)"
            )
        for name in missing:
            values[name] = LOCAL_EMAIL_DEFAULTS[name]
        try:
            settings = EmailSettings.model_validate(values)
        except ValidationError as exc:
            raise EmailSettingsError(_describe(exc)) from None
        settings.check()
        if not self.local and not settings.engage_base_url.startswith("https://"):
            # RFC 8058 one-click unsubscribe (and the mailbox providers that honour it) wants https.
            raise EmailSettingsError("ENGAGE_BASE_URL must be an https URL outside the local stack")
        return settings

    def require_secrets(self, *settings: SecretSetting) -> None:
        """Refuses (MissingSecretSetting, naming each setting) when a secret has neither its value nor
        its SSM parameter configured, unless on the local stack, so a misconfigured function never
        starts rather than signing with a public default."""
        if self.local:
            return
        missing = [
            s for s in settings if s.env_name not in self._env and s.parameter_env_name not in self._env
        ]
        if missing:
            raise MissingSecretSetting("; ".join(s.missing() for s in missing))


def _describe(error: ValidationError) -> str:
    """Each bad value as `VARIABLE: what is wrong (was '...')`: the variable is what an operator sets."""
    problems = []
    for item in error.errors(include_url=False):
        name = ".".join(str(part) for part in item["loc"])
        given = item.get("input")
        shown = f" (was {given!r})" if isinstance(given, str) and len(given) <= 100 else ""
        problems.append(f"{name}: {item['msg']}{shown}")
    return "; ".join(problems)
