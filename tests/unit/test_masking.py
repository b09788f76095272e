"""Masking personal data for display (cems.masking): each kind of value, Japanese and ASCII, empty and
short ones, a whole profile; and, for any value, that a masked value never holds the whole original."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cems.masking import (
    HIDDEN,
    mask_address,
    mask_email,
    mask_identifier,
    mask_name,
    mask_phone,
    mask_trait,
    mask_user_id,
    masked_profile,
)
from cems.models import Channel, ChannelState, OrderSummary, Profile, address_hash
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
LINE_ID = "U1234567890abcdef1234567890abcdef"


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("山田花子", "山*"),
        ("やまだ", "や*"),
        ("Taro Yamada", "T*"),
        ("Li", "L*"),
        ("A", "*"),  # one character: nothing of it
        ("", ""),
        ("  佐藤  ", "佐*"),
    ],
)
def test_a_name_shows_its_first_character(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("taro@example.jp", "t***@example.jp"),
        ("山田.花子@例え.jp", "山***@例え.jp"),
        ("a@example.jp", "***@example.jp"),  # a one-character local part shows none of it
        ("@example.jp", HIDDEN),
        ("not an address", HIDDEN),
        ("taro@", HIDDEN),
        ("", ""),
    ],
)
def test_an_email_shows_its_first_character_and_domain(email: str, masked: str) -> None:
    assert mask_email(email) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("090-1234-5678", "090-****-**78"),
        ("09012345678", "090******78"),
        ("+81 90-1234-5678", "+81 9*-****-**78"),
        ("03-1234-5678", "03-1***-**78"),
        ("1234567", "*****67"),  # fewer than ten digits: no prefix shown
        ("12345", HIDDEN),
        ("", ""),
    ],
)
def test_a_phone_shows_its_last_two_digits(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_a_line_user_id_shows_its_ends() -> None:
    assert mask_identifier(LINE_ID) == "U12…ef"
    assert mask_identifier("short") == HIDDEN
    assert mask_identifier("") == ""


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("東京都渋谷区神南1-2-3", "東京都"),
        ("〒150-0001 東京都渋谷区神宮前1-1", "東京都"),
        ("北海道札幌市中央区", "北海道"),
        ("東京都", HIDDEN),  # only a prefecture: the whole value, so nothing
        ("1-2-3 Jingumae, Shibuya", HIDDEN),
        ({"state": "大阪府", "city": "大阪市", "street": "梅田1-1"}, "大阪府"),
        ({"city": "大阪市"}, HIDDEN),
        (42, HIDDEN),
        ("", ""),
    ],
)
def test_an_address_shows_its_prefecture_only(address: object, masked: str) -> None:
    assert mask_address(address) == masked


def test_traits_are_masked_by_their_name_whatever_its_spelling() -> None:
    assert mask_trait("firstName", "花子") == "花*"
    assert mask_trait("last_name", "山田") == "山*"
    assert mask_trait("Email", "taro@example.jp") == "t***@example.jp"
    assert mask_trait("mobile_phone", "090-1234-5678") == "090-****-**78"
    assert mask_trait("birthday", "1990-04-01") == HIDDEN
    assert mask_trait("name", ["a", "list"]) == HIDDEN  # not text: hidden whole
    assert mask_trait("name", None) is None
    assert mask_trait("plan", "gold") == "gold"  # not personal: as stored
    assert mask_trait("survey.taste", "sweet") == "sweet"


def test_a_shop_user_id_is_kept_unless_it_is_a_contact_point() -> None:
    assert mask_user_id("10042") == "10042"
    assert mask_user_id("taro@example.jp") == "t***@example.jp"
    assert mask_user_id("090-1234-5678") == "090-****-**78"


def test_a_masked_profile_hides_every_personal_field_and_keeps_the_facts() -> None:
    address = "taro@example.jp"
    profile = Profile(
        customer_id="cus_1",
        user_id="10042",
        anonymous_ids={"anon-0123456789"},
        line_user_id=LINE_ID,
        traits={
            "name": "山田太郎",
            "email": address,
            "phone": "090-1234-5678",
            "address": "東京都渋谷区神南1-2-3",
            "plan": "gold",
            "email_opt_in": True,
        },
        orders={"o1": OrderSummary(at=NOW, amount=Decimal(3240), currency="JPY")},
        channels={
            Channel.EMAIL: ChannelState(
                reachable=True, consent=True, updated_at=NOW, address_hash=address_hash(address)
            ),
            Channel.LINE: ChannelState(reachable=True, consent=False, updated_at=NOW),
        },
        merged_ids={"cus_0"},
        first_seen_at=NOW,
        updated_at=NOW,
    )
    shown = masked_profile(profile)
    assert shown["masked"] is True
    assert shown["traits"] == {
        "name": "山*",
        "email": "t***@example.jp",
        "phone": "090-****-**78",
        "address": "東京都",
        "plan": "gold",
        "email_opt_in": True,
    }
    assert shown["line_user_id"] == "U12…ef" and shown["anonymous_ids"] == ["ano…89"]
    assert shown["user_id"] == "10042" and shown["customer_id"] == "cus_1"
    assert shown["merged_ids"] == ["cus_0"]
    assert shown["purchase_count"] == 1 and shown["monetary_total"] == "3240"
    assert shown["channels"]["email"]["consent"] is True
    assert shown["channels"]["email"]["address_hash"] == address_hash(address)[:8] + "…"
    assert shown["channels"]["line"] == {**shown["channels"]["line"], "reachable": True, "consent": False}
    text = repr(shown)
    for secret in (address, "山田太郎", "090-1234-5678", LINE_ID, "anon-0123456789", address_hash(address)):
        assert secret not in text


# Values made of the mask's own characters are left out: `***` masked is `***`.
_TEXT = st.text(
    alphabet=st.characters(exclude_characters="*…", exclude_categories=["Cs"]), min_size=3, max_size=40
)
# The shop's user id is kept as it is by design (mask_user_id), so it is not among them.
_MASKERS = [mask_name, mask_email, mask_phone, mask_identifier, mask_address]


@given(_TEXT, st.sampled_from(_MASKERS))
def test_a_masked_value_never_holds_the_whole_original(value: str, masker: object) -> None:
    assert callable(masker)
    assert value.strip() not in masker(value) or len(value.strip()) < 3


@settings(max_examples=50, deadline=None)
@given(
    st.from_regex(r"[a-z0-9.]{1,20}@[a-z0-9]{1,10}\.(jp|com)", fullmatch=True),
    st.from_regex(r"0[789]0-?\d{4}-?\d{4}", fullmatch=True),
    st.text(alphabet="山田花子太郎佐藤鈴木高橋", min_size=3, max_size=8),
)
def test_a_masked_profile_never_holds_a_whole_contact_point(email: str, phone: str, name: str) -> None:
    profile = Profile(
        customer_id="cus_1",
        traits={"email": email, "phone": phone, "name": name},
        first_seen_at=NOW,
        updated_at=NOW,
    )
    shown = repr(masked_profile(profile)["traits"])
    assert email not in shown and phone not in shown and name not in shown
