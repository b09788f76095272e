"""Email settings: who mails, the footer Japan's law asks for, and where the mail's links point.
Read from the environment by `cems.settings` (the one place that reads it).
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from typing import Self

from cems.engagement.config import LOCAL_ENGAGE_BASE_URL
from cems.settings import BaseUrl, Positive, Settings, SettingsArea, SettingsError, variables


class EmailSettingsError(SettingsError):
    """A required email setting is missing or would make every mail fail."""


# Japan's Act on Specified Electronic Mail (特定電子メール法) asks every marketing mail to name the
# sender, its postal address and a contact for complaints, so these are required (with where the
# mail's links point): send_email started without them fails at init (every message waits in the
# queue) rather than mailing without them. Only the local stack gets these documented sample values.
REQUIRED = (
    "EMAIL_FROM_ADDRESS",
    "EMAIL_FROM_NAME",
    "EMAIL_POSTAL_ADDRESS",
    "EMAIL_CONTACT",
    "ENGAGE_BASE_URL",
)
LOCAL_DEFAULTS = {
    "EMAIL_FROM_ADDRESS": "shop@example.jp",
    "EMAIL_FROM_NAME": "茶寮みどり",
    "EMAIL_POSTAL_ADDRESS": "〒100-0001 東京都千代田区千代田1-1 (1-1 Chiyoda, Chiyoda-ku, Tokyo, Japan)",
    "EMAIL_CONTACT": "support@example.jp",
    "ENGAGE_BASE_URL": LOCAL_ENGAGE_BASE_URL,
}


class EmailSettings(SettingsArea):
    """The email sender: who mails, the footer the law asks for, and where its links point."""

    model_config = variables(
        from_address="EMAIL_FROM_ADDRESS",
        from_name="EMAIL_FROM_NAME",
        postal_address="EMAIL_POSTAL_ADDRESS",
        contact="EMAIL_CONTACT",
        configuration_set="SES_CONFIGURATION_SET",
        engage_base_url="ENGAGE_BASE_URL",
        retry_base_seconds="CEMS_EMAIL_RETRY_BASE_SECONDS",
    )
    from_address: str  # a verified SES identity (address or domain)
    from_name: str  # the shop's name, shown as the sender; may be Japanese
    postal_address: str  # the sender's postal address, shown in every footer
    contact: str  # where recipients send enquiries and complaints (address, phone or URL)
    configuration_set: str | None = None  # SES configuration set: event publishing (bounces, ...)
    engage_base_url: BaseUrl  # the engage API's base URL (links, pixel, unsubscribe)
    # Exponential backoff for SES throttling: base * 2^(receive count - 1), jittered, capped.
    retry_base_seconds: Positive = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The sender's settings; outside the local stack the law's sender name, postal address and
        contact (and ENGAGE_BASE_URL, https) are required."""
        missing = [name for name in REQUIRED if not settings.has(name)]
        if missing and not settings.local:
            raise EmailSettingsError(
                f"email settings missing: {', '.join(missing)} (the sender's name, postal address and "
                "contact are required in every marketing mail)"
            )
        try:
            email = settings.validated(cls, **{name: LOCAL_DEFAULTS[name] for name in missing})
        except SettingsError as exc:
            raise EmailSettingsError(str(exc)) from None
        email.check()
        if not settings.local and not email.engage_base_url.startswith("https://"):
            # RFC 8058 one-click unsubscribe (and the mailbox providers that honour it) wants https.
            raise EmailSettingsError("ENGAGE_BASE_URL must be an https URL outside the local stack")
        return email

    def check(self) -> None:
        """Settings that would make every mail fail are refused at init, not mail by mail."""
        # Imported here: only send_email checks a sender, and the header modules cost every other
        # function's cold start.
        from email.errors import HeaderParseError
        from email.headerregistry import Address

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
