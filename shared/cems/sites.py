"""Sites: the sources allowed to send events, and their keys.

Each site has a public write key (it ships in the tag, with the browser origins it may be used from),
a secret server key (for the shop's servers and Segment's server libraries: trusted, see cems.trust)
and an identity secret, with which the shop's server makes the user hashes that prove a browser's
userId. The Sites table holds one item per key.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cems import clock
from cems.models import Site
from cems.ports import SiteLookup


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


def new_secret_key() -> str:
    return SECRET_KEY_PREFIX + secrets.token_urlsafe(32)


def new_identity_secret() -> str:
    return "is_" + secrets.token_urlsafe(32)


# Longer than any key CEMS issues (`wk_` + 32, `sk_` + 43 characters) or a shop would choose.
MAX_KEY_LENGTH = 128
# Secret server keys start with this, so a key can be told apart (and looked up) without a read.
SECRET_KEY_PREFIX = "sk_"  # noqa: S105 - a prefix, not a secret


def is_secret_key(key: str) -> bool:
    return key.startswith(SECRET_KEY_PREFIX)


@dataclass(frozen=True)
class SiteCredentials:
    """What `cems site add` shows once: the public write key (in the site's item), the secret server
    key (only its hash is stored) and the identity secret user hashes are made with."""

    site: Site
    secret_key: str | None
    identity_secret: str | None

    def shown(self) -> dict[str, object]:
        return {
            **self.site.model_dump(
                mode="json",
                exclude={"identity_secret", "previous_identity_secret"},
            ),
            "secret_key": self.secret_key,
            "identity_secret": self.identity_secret,
        }


class SiteDirectory:
    """Key -> Site with a short in-memory cache: every request needs it, sites rarely change.

    The cache is bounded (least recently used out first) and remembers unknown keys too: requests
    with random keys can neither grow it without bound nor make every request a read. Hand-written
    rather than functools.lru_cache, which has no expiry.
    """

    def __init__(self, store: SiteLookup, max_age_seconds: float, max_entries: int = 1024) -> None:
        self.store = store
        self.max_age_seconds = max_age_seconds
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, Site | None]] = OrderedDict()
        self._lock = threading.Lock()

    def active_site(self, key: str) -> Site | None:
        if len(key) > MAX_KEY_LENGTH:
            # No key is this long: answered without a read (DynamoDB refuses keys over 2 KB) and not
            # cached (a flood of huge keys must not fill memory).
            return None
        # Cache age is wall time (monotonic), not business time: the local clock may jump days.
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None or now - cached[0] > self.max_age_seconds:
            cached = (now, self.store.get(key))
            with self._lock:
                self._cache[key] = cached
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        site = cached[1]
        return site if site is not None and site.is_active(clock.now()) else None

    def cached_keys(self) -> int:
        return len(self._cache)
