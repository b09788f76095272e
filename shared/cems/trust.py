"""Trust at the edges: what a message proves about who someone is, and so what it may change.

A site's write key ships in every page, so anything it sends is a claim. CEMS believes a claim to be
a known customer (a `userId`) only with proof the page cannot forge: the user hash, the hex
HMAC-SHA256 of the user id under the site's identity secret, which the shop's server renders into the
page of a signed-in customer (Intercom's identity verification; Shopify's theme language can compute
it with its `hmac_sha256` filter, see docs/tag.md). A secret server key, kept on the shop's server,
and CEMS's own sources (LINE's signed webhook, engage's signed links) are believed as they are.

What each level of proof may do (cems.ingest and cems.identity apply it):

- server (a server key, or LINE/engage): the event goes on its userId's customer; every trait; email
  consent set directly, with its source recorded; any merge of one person's profiles.
- verified (a userId with a valid user hash): on its userId's customer; every trait; an email opt-out
  counts at once, an opt-in only after the confirmation mail is clicked (double opt-in); pulls in only
  visitors nobody has claimed (no user id, LINE user, contact trait or channel state).
- anonymous (no userId): on its anonymous id's customer; traits but not contact traits or consent;
  never merges.
- claimed (a userId without a user hash): as anonymous; the userId is kept on the stored event as
  `claimed_user_id`, so analytics can still count what "this user" did, and it is believed in nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cems.errors import ClientError
from cems.models import Site, Trust

# Where a message carries its user hash: in `context`, which every Segment library lets a caller
# fill. It is a credential for that user, so it is removed before the event is stored.
USER_HASH_FIELD = "userHash"
# Traits that are ways to reach a person or that record their consent: only a proven user's own
# browser or the shop's server may set them (a claim must never redirect someone's messages).
CONTACT_TRAITS = frozenset({"email", "phone", "address"})
EMAIL_OPT_IN_TRAIT = "email_opt_in"


class Proof(StrEnum):
    SERVER = "server"  # a server key or CEMS's own signed source
    VERIFIED = "verified"  # a userId with a valid user hash
    ANONYMOUS = "anonymous"  # no userId
    CLAIMED = "claimed"  # a userId without a user hash: kept as a claim, believed in nothing


@dataclass(frozen=True)
class Judged:
    """What CEMS believes of one message."""

    proof: Proof
    # The userId that was sent but not proven (CLAIMED only).
    claimed_user_id: str | None = None

    @property
    def knows_user(self) -> bool:
        return self.proof in (Proof.SERVER, Proof.VERIFIED)

    @property
    def trusted(self) -> bool:
        return self.proof is Proof.SERVER


def user_hash(identity_secret: str, user_id: str) -> str:
    """The proof that `user_id` is signed in, as the shop's server computes it."""
    return hmac.new(identity_secret.encode("utf-8"), user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def verifies_user(site: Site, user_id: str, given: str, at: datetime) -> bool:
    """Whether `given` is `user_id`'s hash under one of the site's identity secrets (constant time)."""
    candidate = given.strip().lower().encode("ascii", "replace")
    return any(
        hmac.compare_digest(user_hash(secret, user_id).encode("ascii"), candidate)
        for secret in site.identity_secrets(at)
    )


def judge(
    site: Site,
    user_id: str | None,
    given_hash: object,
    at: datetime,
    *,
    has_anonymous_id: bool,
    field: str,
    index: int | None = None,
) -> Judged:
    """The proof a message has. A user hash that is present but wrong is refused (401): it is a
    broken integration or a forgery, and silently storing the message would hide either. A userId
    without any hash is kept as a claim when the message also has an anonymous id to place it on."""
    if site.trust is Trust.SERVER:
        return Judged(Proof.SERVER)
    if user_id is None:
        return Judged(Proof.ANONYMOUS)
    if given_hash is not None:
        if isinstance(given_hash, str) and given_hash and verifies_user(site, user_id, given_hash, at):
            return Judged(Proof.VERIFIED)
        raise ClientError(
            401,
            "invalid_user_hash",
            f"{field} is not HMAC-SHA256(identity secret, userId) for this site (see docs/tag.md)",
            field=field,
            index=index,
        )
    if not has_anonymous_id:
        raise ClientError(
            401,
            "user_hash_required",
            f"a userId sent with a public write key needs {field} (or use the secret server key)",
            field=field,
            index=index,
        )
    return Judged(Proof.CLAIMED, claimed_user_id=user_id)
