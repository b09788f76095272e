"""Every setting CEMS reads from its environment: typed, with its default, read once at a function's init.

This is the only module that reads `os.environ` for the functions (the local stack and the CLI keep
their own options). `Settings.from_environ()` takes one snapshot of the environment; each area is a
frozen pydantic model (`SettingsArea`) naming the variable of each field (`variables(...)`) and
holding its one default: `Tables`, `Retention` and `Queues` here, and the areas of one part of CEMS
in that part's package (`cems.scenario.config.EngineSettings`, `cems.line.config.LineSettings`,
`cems.engagement.config.EngagementSettings`, `cems.email.config.EmailSettings`), so a new channel
brings its settings with it. An area is validated from the snapshot the first time a builder in
`cems.wiring` asks for it, which is during init, so a bad value stops the function before its first
event, with a message naming the variable (`SettingsError`); a function never builds or checks the
areas it does not use (`collect` never loads the email sender's).

Secrets are not settings values: the environment names where they are (an SSM SecureString's name, or
in tests the value itself) and they are read on first use through Powertools parameters, cached for
`SECRET_CACHE_SECONDS`, so a rotated secret needs no deploy. A function whose secret is configured
neither way refuses to start (`MissingSecretSetting`) unless it runs on the local stack
(CEMS_LOCAL=1), which alone gets the documented public local values.

Why plain pydantic models validated from `os.environ`, not pydantic-settings: Lambda cold start is
benchmarked (`make bench`). `import pydantic_settings` (2.16.3) alone costs 22-28 ms in a fresh
interpreter that has already imported pydantic, Powertools and the collect path (`python -X
importtime`: python-dotenv, its CLI parsing and cloud secret sources, none of which CEMS uses), before
any model is built. What CEMS would use it for, reading each field from a named variable, is one
alias generator per area here. Building model classes costs init time too (about a millisecond
each), hence `defer_build`, no string annotations and the areas imported on first use.
"""

# No `from __future__ import annotations` here: pydantic would compile every field's annotation
# from its string when each area class is built, a few ms of every function's init.
import os
from collections.abc import Mapping
from typing import Annotated, Any, Self, TypeVar

from pydantic import AliasGenerator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

SECRET_CACHE_SECONDS = 300
# The local stack's variable; only exactly "1" counts ("true" in a copied .env must not unlock the
# public local secrets).
LOCAL_VARIABLE = "CEMS_LOCAL"


class SettingsError(ValueError):
    """A setting is missing or has a bad value; the message names the variable."""


class MissingSecretSetting(RuntimeError):
    """A secret has no value and no SSM parameter configured, outside the local stack."""


# ------------------------------------------------------------------------------------------------ secrets


class SecretSetting:
    """Where one secret comes from: its value (`env_name`), else the SSM SecureString that the
    `parameter_env_name` variable names; the public `local_default` only on the local stack."""

    # A plain class, not a dataclass: creating a dataclass runs `exec`, a cost every cold start pays.
    __slots__ = ("env_name", "local_default", "parameter_env_name")

    def __init__(self, env_name: str, parameter_env_name: str, local_default: str) -> None:
        self.env_name = env_name
        self.parameter_env_name = parameter_env_name
        self.local_default = local_default

    def missing(self) -> str:
        return (
            f"{self.parameter_env_name} (the SSM SecureString holding it) or {self.env_name} must be set; "
            "the public local default is used only on the local stack (CEMS_LOCAL=1)"
        )


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


class SettingsArea(BaseModel):
    """One area's settings, read from the variables its `model_config` names (`variables`); built by
    hand (tests), they take their field names."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, defer_build=True)

    @classmethod
    def from_settings(cls, settings: "Settings") -> Self:
        """This area from one function's settings. An area with more to check (secrets that must be
        configured, the law's sender details) says so in its own override."""
        return settings.validated(cls)


def variables(**variables: str) -> ConfigDict:
    """An area's configuration: which variable each field is read from. One alias generator per area
    rather than a `Field(validation_alias=...)` per field: building a model class is init time in
    every function, and each `Field` adds to it."""
    return ConfigDict(
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        defer_build=True,
        alias_generator=AliasGenerator(validation_alias=variables.__getitem__),
    )


def _without_trailing_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


# A base URL that paths are appended to.
BaseUrl = Annotated[str, BeforeValidator(_without_trailing_slash)]
AtLeastOne = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]
# A secret's own value (tests; production names its SSM parameter): never shown in a repr.
SecretValue = Annotated[str | None, Field(repr=False)]


class Tables(SettingsArea):
    """The DynamoDB tables (template.yaml passes their generated names)."""

    model_config = variables(
        customers="CUSTOMERS_TABLE",
        events="EVENTS_TABLE",
        sites="SITES_TABLE",
        idempotency="IDEMPOTENCY_TABLE",
        journeys="JOURNEYS_TABLE",
        deliveries="DELIVERIES_TABLE",
        audit="AUDIT_TABLE",
    )
    customers: str = "CustomersTable"
    events: str = "EventsTable"
    sites: str = "SitesTable"
    idempotency: str = "IdempotencyTable"
    journeys: str = "JourneysTable"
    deliveries: str = "DeliveriesTable"
    audit: str = "AuditTable"


class Retention(SettingsArea):
    """How long things are kept and cached."""

    model_config = variables(
        event_days="CEMS_EVENT_RETENTION_DAYS",
        dedupe_days="CEMS_DEDUPE_DAYS",
        delivery_days="CEMS_DELIVERY_RETENTION_DAYS",
        site_cache_seconds="CEMS_SITE_CACHE_SECONDS",
        audit_days="CEMS_AUDIT_RETENTION_DAYS",
    )
    event_days: AtLeastOne = 395
    # How long a messageId is remembered for de-duplication; client retries come within minutes,
    # analytics-python retries for at most a few hours, so a week is generous.
    dedupe_days: AtLeastOne = 7
    delivery_days: AtLeastOne = 395
    site_cache_seconds: Annotated[float, Field(ge=0)] = 60.0
    # How long an operator's audit-log entry is kept (the template's AuditRetentionDays).
    audit_days: AtLeastOne = 400


class Queues(SettingsArea):
    """SQS queue URLs (empty where a function never sends to that queue)."""

    model_config = variables(
        line_send="LINE_SEND_QUEUE_URL",
        email_send="EMAIL_SEND_QUEUE_URL",
        web_send="WEB_SEND_QUEUE_URL",
        broadcast="BROADCAST_QUEUE_URL",
        timer="TIMER_QUEUE_URL",
    )
    line_send: str = ""
    email_send: str = ""
    web_send: str = ""
    broadcast: str = ""
    # Scenario timers (cems.scenario.timers); empty: the runner starts none and the tick does it all.
    timer: str = ""


# ----------------------------------------------------------------------------------------------- settings

A = TypeVar("A", bound=SettingsArea)


class Settings:
    """One function's settings, from one snapshot of its environment; each area validated when first
    asked for (by its builder in cems.wiring, at init)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        # Surrounding blanks are dropped and an empty variable counts as unset: a template parameter
        # left empty ("") means "use the default", as it always has for the optional ones.
        self._env = {name: value.strip() for name, value in env.items() if value.strip()}
        self.local = self._env.get(LOCAL_VARIABLE) == "1"
        self._areas: dict[type[SettingsArea], SettingsArea] = {}

    @classmethod
    def from_environ(cls) -> "Settings":
        """The process environment, read now (each function reads it once, at init)."""
        return cls(os.environ)

    def validated(self, model: type[A], **extra: Any) -> A:
        """`model` validated from this snapshot (and `extra`); a bad value is a SettingsError naming
        its variable. An area's own `from_settings` calls this, adding what it needs."""
        try:
            return model.model_validate({**self._env, **extra})
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    def has(self, variable: str) -> bool:
        """Whether `variable` is set (and not blank)."""
        return variable in self._env

    def area(self, model: type[A]) -> A:
        """One area, validated the first time it is asked for (by its builder in cems.wiring, at init)
        and kept. The area's class says how it loads (`SettingsArea.from_settings`), so this module
        never imports an area: the areas of one part of CEMS live in that part's package and import
        this one, never the other way round (no import cycle), and `collect` never pays for the
        classes of the email sender's settings."""
        loaded = self._areas.get(model)
        if loaded is None:
            loaded = self._areas[model] = model.from_settings(self)
        assert isinstance(loaded, model)
        return loaded

    @property
    def tables(self) -> "Tables":
        return self.area(Tables)

    @property
    def retention(self) -> "Retention":
        return self.area(Retention)

    @property
    def queues(self) -> "Queues":
        return self.area(Queues)

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
