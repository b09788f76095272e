"""Sites: each write key names a site and the browser origins allowed to send its events."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cems import clock
from cems.models import Site
from cems.store import from_attribute_map, to_attribute_map

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


class SiteStore:
    """Sites in the Sites table, keyed by write key (write keys are public: they ship in the tag)."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def get(self, write_key: str) -> Site | None:
        item = self.client.get_item(TableName=self.table_name, Key={"write_key": {"S": write_key}}).get(
            "Item"
        )
        return Site.model_validate(from_attribute_map(item)) if item else None

    def sites_named_all(self) -> list[Site]:
        # The Sites table holds a handful of items, read only by operator commands.
        sites: list[Site] = []
        for page in self.client.get_paginator("scan").paginate(TableName=self.table_name):
            sites.extend(Site.model_validate(from_attribute_map(i)) for i in page["Items"])
        return sorted(sites, key=lambda s: (s.name, s.created_at))

    def sites_named(self, name: str) -> list[Site]:
        return [s for s in self.sites_named_all() if s.name == name]

    def add(self, name: str, origins: list[str], write_key: str | None = None) -> Site:
        """Add a site, or replace the origins of the site that already has this write key."""
        existing = self.sites_named(name)
        site = Site(
            write_key=write_key or new_write_key(),
            site_id=existing[0].site_id if existing else f"site_{uuid.uuid4().hex[:12]}",
            name=name,
            origins=origins,
            created_at=clock.now(),
        )
        self.client.put_item(TableName=self.table_name, Item=to_attribute_map(site.model_dump()))
        return site

    def rotate(
        self, name: str, grace: timedelta, origins: list[str] | None = None
    ) -> tuple[Site, list[Site]]:
        """A new write key for a site; the old ones keep working for `grace`, so tags can be updated."""
        existing = [s for s in self.sites_named(name) if s.is_active(clock.now())]
        if not existing:
            raise LookupError(f"no site named {name!r}")
        new = self.add(name, origins if origins is not None else existing[0].origins)
        retiring = []
        for old in existing:
            if old.write_key == new.write_key:
                continue
            expires_at = min(
                old.expires_at or datetime.max.replace(tzinfo=clock.now().tzinfo), clock.now() + grace
            )
            retired = old.model_copy(update={"expires_at": expires_at})
            self.client.put_item(TableName=self.table_name, Item=to_attribute_map(retired.model_dump()))
            retiring.append(retired)
        return new, retiring


class SiteDirectory:
    """Write key -> Site with a short in-memory cache: every request needs it, sites rarely change."""

    def __init__(self, store: SiteStore, max_age_seconds: float) -> None:
        self.store = store
        self.max_age_seconds = max_age_seconds
        self._cache: dict[str, tuple[float, Site | None]] = {}
        self._lock = threading.Lock()

    def active_site(self, write_key: str) -> Site | None:
        # Cache age is wall time (monotonic), not business time: the local clock may jump days.
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(write_key)
        if cached is None or now - cached[0] > self.max_age_seconds:
            cached = (now, self.store.get(write_key))
            with self._lock:
                self._cache[write_key] = cached
        site = cached[1]
        return site if site is not None and site.is_active(clock.now()) else None
