"""Contact lookups' rules (cems.lookups): how an email address and a phone number are normalised and
hashed, and what a write of contact traits removes and puts."""

from __future__ import annotations

import hashlib

import pytest
from cems.lookups import (
    ContactKind,
    contact_hash,
    contact_hashes,
    lookup_actions,
    lookup_changes,
    normalised_email,
    normalised_phone,
)
from cems.models import address_hash


def test_an_email_is_trimmed_and_lower_cased_and_hashed_as_the_suppression_list_does() -> None:
    assert normalised_email("  Taro@Example.JP ") == "taro@example.jp"
    assert contact_hash(ContactKind.EMAIL, " Taro@Example.JP") == address_hash("taro@example.jp")
    for not_an_address in ("", "taro", "@example.jp", "taro@"):
        assert contact_hash(ContactKind.EMAIL, not_an_address) is None
    assert contact_hash(ContactKind.EMAIL, 42) is None
    assert contact_hash(ContactKind.EMAIL, None) is None


@pytest.mark.parametrize(
    "spelling",
    [
        "090-1234-5678",
        "09012345678",
        "090 (1234) 5678",
        "+81 90-1234-5678",
        "+81-(0)90-1234-5678",
        "0081 90 1234 5678",
        "０９０－１２３４－５６７８",  # full-width, as Japanese forms often send it
    ],
)
def test_a_japanese_phone_number_in_any_spelling_is_one_number(spelling: str) -> None:
    assert normalised_phone(spelling) == "09012345678"
    expected = hashlib.sha256(b"09012345678").hexdigest()
    assert contact_hash(ContactKind.PHONE, spelling) == expected


def test_another_countrys_number_keeps_its_country_code_and_short_ones_are_none() -> None:
    assert normalised_phone("+1 (415) 555-0100") == "+14155550100"
    assert normalised_phone("12345") is None
    assert normalised_phone("unknown") is None


def test_a_write_removes_the_old_values_lookup_and_puts_the_new_ones() -> None:
    old, new = address_hash("old@example.jp"), address_hash("new@example.jp")
    removed, put = lookup_changes({"email": "new@example.jp"}, {"email": "old@example.jp"})
    assert removed == {ContactKind.EMAIL: old} and put == {ContactKind.EMAIL: new}
    # The same address in another spelling: nothing to remove.
    removed, put = lookup_changes({"email": "OLD@example.jp"}, {"email": "old@example.jp"})
    assert removed == {} and put == {ContactKind.EMAIL: old}
    # Cleared: only removed. Not written: untouched.
    assert lookup_changes({"email": None}, {"email": "old@example.jp"}) == ({ContactKind.EMAIL: old}, {})
    assert lookup_changes({"plan": "gold"}, {"email": "old@example.jp"}) == ({}, {})
    assert lookup_actions({"email": "a@b.jp", "phone": "09012345678", "plan": "gold"}) == 4
    assert contact_hashes({"email": "a@b.jp", "phone": "x"}) == {ContactKind.EMAIL: address_hash("a@b.jp")}
