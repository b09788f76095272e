"""Email settings, per stage, from the environment (template.yaml parameters).

Japan's Act on Specified Electronic Mail (特定電子メール法) asks every marketing mail to name the
sender, its postal address and a contact for complaints, so these are required: a function started
without them fails at init (loudly, every message waits in the queue) rather than mailing without
them. Only the local stack (CEMS_LOCAL=1) gets the documented sample values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address

from cems.engagement.config import LOCAL_ENGAGE_BASE_URL

# Exponential backoff for SES throttling: base * 2^(receive count - 1), jittered, capped.
RETRY_BASE_SECONDS = 2.0
LOCAL_DEFAULTS = {
    "EMAIL_FROM_ADDRESS": "shop@example.jp",
    "EMAIL_FROM_NAME": "茶寮みどり",
    "EMAIL_POSTAL_ADDRESS": "〒100-0001 東京都千代田区千代田1-1 (1-1 Chiyoda, Chiyoda-ku, Tokyo, Japan)",
    "EMAIL_CONTACT": "support@example.jp",
    "ENGAGE_BASE_URL": LOCAL_ENGAGE_BASE_URL,
}
REQUIRED = (
    "EMAIL_FROM_ADDRESS",
    "EMAIL_FROM_NAME",
    "EMAIL_POSTAL_ADDRESS",
    "EMAIL_CONTACT",
    "ENGAGE_BASE_URL",
)


class EmailSettingsError(RuntimeError):
    """A required email setting is missing."""


@dataclass(frozen=True)
class EmailSettings:
    from_address: str  # a verified SES identity (address or domain)
    from_name: str  # the shop's name, shown as the sender; may be Japanese
    postal_address: str  # the sender's postal address, shown in every footer
    contact: str  # where recipients send enquiries and complaints (address, phone or URL)
    configuration_set: str | None  # SES configuration set: event publishing (bounces, complaints, ...)
    engage_base_url: str  # the engage API's base URL, no trailing slash (links, pixel, unsubscribe)
    customers_table: str = "CustomersTable"
    deliveries_table: str = "DeliveriesTable"
    journeys_table: str = "JourneysTable"
    retry_base_seconds: float = RETRY_BASE_SECONDS
    delivery_retention_days: int = 395

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EmailSettings:
        values = dict(os.environ if env is None else env)
        local = values.get("CEMS_LOCAL") == "1"
        missing = [name for name in REQUIRED if not values.get(name, "").strip()]
        if missing and not local:
            raise EmailSettingsError(
                f"email settings missing: {', '.join(missing)} (the sender's name, postal address and "
                "contact are required in every marketing mail)"
            )
        if local:
            for name in missing:
                values[name] = LOCAL_DEFAULTS[name]
        settings = cls(
            from_address=values["EMAIL_FROM_ADDRESS"].strip(),
            from_name=values["EMAIL_FROM_NAME"].strip(),
            postal_address=values["EMAIL_POSTAL_ADDRESS"].strip(),
            contact=values["EMAIL_CONTACT"].strip(),
            configuration_set=values.get("SES_CONFIGURATION_SET", "").strip() or None,
            engage_base_url=values["ENGAGE_BASE_URL"].strip().rstrip("/"),
            customers_table=values.get("CUSTOMERS_TABLE", "CustomersTable"),
            deliveries_table=values.get("DELIVERIES_TABLE", "DeliveriesTable"),
            journeys_table=values.get("JOURNEYS_TABLE", "JourneysTable"),
            retry_base_seconds=float(values.get("CEMS_EMAIL_RETRY_BASE_SECONDS", RETRY_BASE_SECONDS)),
            delivery_retention_days=int(values.get("CEMS_DELIVERY_RETENTION_DAYS", "395")),
        )
        settings.check()
        if not local and not settings.engage_base_url.startswith("https://"):
            # RFC 8058 one-click unsubscribe (and the mailbox providers that honour it) wants https.
            raise EmailSettingsError("ENGAGE_BASE_URL must be an https URL outside the local stack")
        return settings

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
