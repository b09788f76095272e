"""Masking personal data for display: what the operator console and `cems customer find` show by
default (docs/customers.md, "Masking").

An operator looking a customer up needs to recognise them, not to read their contact points: a
masked value keeps just enough to tell two customers apart (a name's first character, an address's
domain, a phone's last two digits, a LINE id's ends) and never the whole original. Only an explicit
unmasked view (itself audited by the console) or an export for a disclosure request shows more.

Masked: traits that name or reach the person (names, email, phone, address, birthday, ...), the LINE
user id, anonymous ids (a browser's cookie identifies a device), email consent's address hash (it
can be matched against a list of known addresses). Kept: the shop's user id (the shop's own account
number, meaningless outside the shop, and what an operator needs to find the order in the shop's
admin; one that looks like an email address or a phone number is masked as one), CEMS's customer
ids, purchase facts, channel and consent states, and every other trait.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from cems.models import Profile

HIDDEN = "***"
ELLIPSIS = "…"

# The 47 prefectures, so an address is shown as its prefecture only.
PREFECTURES = [
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
]
# A postal code written before the address (〒150-0001, 150-0001): dropped to find the prefecture.
_POSTAL_CODE = re.compile(r"^\s*(〒\s*)?\d{3}-?\d{4}\s*")


def mask_name(value: str) -> str:
    """The first character and one `*` (`山田花子` → `山*`, `Taro Yamada` → `T*`): how long the
    name is stays hidden too. A one-character name shows nothing."""
    value = value.strip()
    if not value:
        return ""
    if len(value) == 1:
        return "*"
    return value[0] + "*"


def mask_email(value: str) -> str:
    """The local part's first character, `***`, and the domain (`taro@example.jp` →
    `t***@example.jp`). A one-character or empty local part shows none of it; a value that is no
    address at all shows nothing."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not domain:
        return HIDDEN if value.strip() else ""
    if not local:
        return HIDDEN
    shown = local[0] if len(local) > 1 else ""
    return f"{shown}{HIDDEN}@{domain}"


def mask_phone(value: str) -> str:
    """Digits hidden but the last two and, in a number of ten digits or more, the first three (the
    carrier or area prefix: `090-1234-5678` → `090-****-**78`); separators stay, so the number
    still reads as one. Fewer than six digits: nothing shown."""
    value = value.strip()
    if not value:
        return ""
    digits = sum(1 for ch in value if ch.isdigit())
    if digits < 6:
        return HIDDEN
    keep_head = 3 if digits >= 10 else 0
    out: list[str] = []
    seen = 0
    for ch in value:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen <= keep_head or seen > digits - 2 else "*")
        else:
            out.append(ch)
    return "".join(out)


def mask_identifier(value: str) -> str:
    """The first three characters, an ellipsis and the last two (`U1234…ef` → `U12…ef`): enough to
    tell two ids apart on a screen. An id shorter than ten characters shows nothing."""
    value = value.strip()
    if not value:
        return ""
    if len(value) < 10:
        return HIDDEN
    return f"{value[:3]}{ELLIPSIS}{value[-2:]}"


def prefecture_of(address: str) -> str | None:
    """The prefecture a Japanese address starts with (a postal code before it skipped), if any."""
    text = _POSTAL_CODE.sub("", unicodedata.normalize("NFKC", address)).strip()
    return next((p for p in PREFECTURES if text.startswith(p)), None)


def mask_address(value: Any) -> str:
    """The prefecture only (`東京都渋谷区神南1-2-3` → `東京都`), else `***`. An address that is only a
    prefecture shows nothing, so a masked value never is the whole original. A structured address
    (Segment's `{street, city, state, postal_code, country}`) shows its `state` when that is a
    prefecture and the address holds more."""
    if isinstance(value, Mapping):
        state = value.get("state")
        rest = [v for k, v in value.items() if k != "state" and v]
        if isinstance(state, str) and rest and (prefecture := prefecture_of(state)):
            return prefecture
        return HIDDEN if value else ""
    if not isinstance(value, str):
        return HIDDEN
    if not value.strip():
        return ""
    prefecture = prefecture_of(value)
    text = _POSTAL_CODE.sub("", unicodedata.normalize("NFKC", value)).strip()
    if prefecture and len(text) > len(prefecture):
        return prefecture
    return HIDDEN


def mask_hidden(value: Any) -> str:
    """Nothing shown but that there is a value."""
    return "" if value in (None, "") else HIDDEN


def _text(masker: Callable[[str], str]) -> Callable[[Any], Any]:
    """A masker of text that hides a value of any other type (a number, a list) entirely."""

    def mask(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return masker(value)
        return HIDDEN

    return mask


# Personal traits by their name folded (lower case, without `_`, `-`, `.` or spaces: `first_name`,
# `firstName` and `First Name` are one), with how each is masked. Segment's reserved traits that
# name or reach a person, the Japanese shops' usual extra ones (kana names), and common synonyms.
_NAME_TRAITS = [
    "name",
    "firstname",
    "lastname",
    "fullname",
    "middlename",
    "nickname",
    "username",
    "displayname",
    "kana",
    "namekana",
    "firstnamekana",
    "lastnamekana",
    "fullnamekana",
    "furigana",
    "sei",
    "mei",
    "seikana",
    "meikana",
]
_PHONE_TRAITS = ["phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "tel", "telephone", "fax"]
_EMAIL_TRAITS = ["email", "emailaddress", "mail"]
_ADDRESS_TRAITS = ["address", "streetaddress", "street", "address1", "address2"]
_HIDDEN_TRAITS = [
    "birthday",
    "birthdate",
    "dateofbirth",
    "dob",
    "postalcode",
    "postcode",
    "zip",
    "zipcode",
    "avatar",
]
PERSONAL_TRAITS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(_NAME_TRAITS, _text(mask_name)),
    **dict.fromkeys(_PHONE_TRAITS, _text(mask_phone)),
    **dict.fromkeys(_EMAIL_TRAITS, _text(mask_email)),
    **dict.fromkeys(_ADDRESS_TRAITS, mask_address),
    **dict.fromkeys(_HIDDEN_TRAITS, mask_hidden),
}


def folded_trait_name(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name).lower()


def is_personal_trait(name: str) -> bool:
    return folded_trait_name(name) in PERSONAL_TRAITS


def mask_trait(name: str, value: Any) -> Any:
    """The trait's value as shown: masked when the trait is personal (by its name), else as it is."""
    masker = PERSONAL_TRAITS.get(folded_trait_name(name))
    return value if masker is None else masker(value)


def mask_user_id(user_id: str) -> str:
    """The shop's user id as it is (its own account number), unless it looks like an email address
    or a phone number: some shops use those as user ids."""
    if "@" in user_id:
        return mask_email(user_id)
    if re.fullmatch(r"[+()\d\s\-]{6,}", user_id):
        return mask_phone(user_id)
    return user_id


def masked_profile(profile: Profile) -> dict[str, Any]:
    """The profile as JSON with every personal field masked (see the module's docstring); `masked`
    says it is. Purchase facts, channel and consent states, and other traits are as stored."""
    document = profile.model_dump(mode="json")
    document["traits"] = {name: mask_trait(name, value) for name, value in profile.traits.items()}
    document["anonymous_ids"] = sorted(mask_identifier(a) for a in profile.anonymous_ids)
    if profile.line_user_id is not None:
        document["line_user_id"] = mask_identifier(profile.line_user_id)
    if profile.user_id is not None:
        document["user_id"] = mask_user_id(profile.user_id)
    for state in document.get("channels", {}).values():
        if state.get("address_hash"):
            # A hash of an address is matched by hashing a list of addresses: shown shortened, enough
            # to compare with a suppression entry's, not to look the address up.
            state["address_hash"] = state["address_hash"][:8] + ELLIPSIS
    document["masked"] = True
    return document
