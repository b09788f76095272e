"""Engagement: signed tracking tokens, the click / open / unsubscribe endpoints and SES events.

The names below are shared with cems.ingest (which lets only `engage` change the email channel)
and the scenario engine (goals, exits and branches name these events); this module imports nothing.
"""

from __future__ import annotations

from enum import StrEnum

# Where engagement events come from: the site id on their stored events and de-duplication markers.
# Sites get generated ids (`site_<hex>`), so no site can send as `engage`.
ENGAGE_SOURCE_ID = "engage"


class EngagementEvent(StrEnum):
    """Names of the events `engage` stores (type track, site id `engage`), for scenarios."""

    OPENED = "Email Opened"
    CLICKED = "Link Clicked"
    UNSUBSCRIBED = "Email Unsubscribed"
    BOUNCED = "Email Bounced"  # permanent bounces only; transient ones are only counted
    COMPLAINED = "Email Complained"
    # Double opt-in: the customer pressed the button behind a confirmation mail's link (cems.consent).
    CONSENT_CONFIRMED = "Email Consent Confirmed"
