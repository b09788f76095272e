"""Contact lookups: finding a customer by an email address or a phone number without a Scan.

The Customers table holds one lookup item per (contact point, customer) (key format in
cems.adapters.dynamodb.keys), keyed by the SHA-256 of the normalised value, never the value itself:
a table key is copied where attributes are not (CloudWatch Contributor Insights' top keys, error
messages naming a key, a stream's keys), and a hash in those places names no one. It is
pseudonymous, not anonymous: whoever holds an address can hash it and look, which is the point.

A lookup item is written in the same transaction as the trusted contact trait it stands for (cems.ingest
and CustomerStore.set_traits): the old value's item removed, the new one's put, so nothing is half
stored. A merge moves the merged-away customer's items to the surviving one; erasure deletes them.
The LINE user id needs none of this: its identity item (`ID#line#<id>`) already finds its customer
(docs/customers.md).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from cems.models import address_hash


class ContactKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"


# The trait each kind of lookup stands for.
LOOKUP_TRAITS: dict[str, ContactKind] = {"email": ContactKind.EMAIL, "phone": ContactKind.PHONE}
# A phone number has at least this many digits (a Japanese landline without its area code's 0 has 9).
MIN_PHONE_DIGITS = 6
_JAPAN = "81"


def normalised_email(value: str) -> str | None:
    """Trimmed and lower-cased, exactly as models.address_hash hashes an address (so a lookup's hash
    is the suppression list's and consent's for the same address); None when it is no address."""
    text = value.strip().lower()
    local, at, domain = text.rpartition("@")
    return text if at and local and domain else None


def normalised_phone(value: str) -> str | None:
    """Digits only, a Japanese number in its domestic form: `+81 90-1234-5678`, `0081-90-1234-5678`,
    `090(1234)5678` and `０９０１２３４５６７８` are all `09012345678` (full-width digits folded; an
    `(0)` written after +81 dropped). Another country's number keeps its `+` and country code. None
    when fewer than MIN_PHONE_DIGITS digits remain."""
    text = unicodedata.normalize("NFKC", value).strip()
    international = text.startswith("+")
    digits = re.sub(r"\D", "", text)
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]
    if international and digits.startswith(_JAPAN):
        digits = "0" + digits[len(_JAPAN) :].removeprefix("0")
    elif international:
        digits = "+" + digits
    if sum(ch.isdigit() for ch in digits) < MIN_PHONE_DIGITS:
        return None
    return digits


def contact_hash(kind: ContactKind, value: Any) -> str | None:
    """The SHA-256 (hex) of the normalised value, or None when it is no email address or phone
    number (not text, empty, too short). An email's is models.address_hash's, so the export finds
    the address's suppression entry with it."""
    if not isinstance(value, str):
        return None
    if kind is ContactKind.EMAIL:
        email = normalised_email(value)
        return None if email is None else address_hash(email)
    phone = normalised_phone(value)
    return None if phone is None else hashlib.sha256(phone.encode("utf-8")).hexdigest()


def contact_hashes(traits: Mapping[str, Any]) -> dict[ContactKind, str]:
    """The lookups a profile with these traits has: each kind's hash, where its trait is usable."""
    found: dict[ContactKind, str] = {}
    for trait, kind in LOOKUP_TRAITS.items():
        hashed = contact_hash(kind, traits.get(trait))
        if hashed is not None:
            found[kind] = hashed
    return found


def lookup_changes(
    traits: Mapping[str, Any], before: Mapping[str, Any]
) -> tuple[dict[ContactKind, str], dict[ContactKind, str]]:
    """What writing `traits` over a profile whose traits were `before` does to its lookups:
    (removed, put), each a hash per kind. A value set again (or in another spelling of the same
    address) removes nothing and puts its item again, which changes nothing."""
    removed: dict[ContactKind, str] = {}
    put: dict[ContactKind, str] = {}
    for trait, kind in LOOKUP_TRAITS.items():
        if trait not in traits:
            continue
        old, new = contact_hash(kind, before.get(trait)), contact_hash(kind, traits[trait])
        if old is not None and old != new:
            removed[kind] = old
        if new is not None:
            put[kind] = new
    return removed, put


def lookup_actions(traits: Mapping[str, Any]) -> int:
    """The most lookup writes setting `traits` can take: a removal and a put per lookup trait."""
    return 2 * sum(1 for trait in LOOKUP_TRAITS if trait in traits)
