"""Sites in the Sites table: one item per key, the public write key as issued and each secret server
key under its hash (key formats: keys.py); adding a site and rotating its keys."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cems import clock
from cems.adapters.dynamodb.items import from_attribute_map, to_attribute_map
from cems.adapters.dynamodb.keys import secret_key_item_key
from cems.models import Site, Trust
from cems.sites import (
    SECRET_KEY_PREFIX,
    SiteCredentials,
    is_secret_key,
    new_identity_secret,
    new_secret_key,
    new_write_key,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class SiteStore:
    """Sites in the Sites table, one item per key: the public write key (`write_key` as issued) with
    the site's origins and identity secret, and each secret server key under `secret#<sha256>`."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def get(self, key: str) -> Site | None:
        """The site a presented key names, with `trust` saying which kind of key it is."""
        item_key = secret_key_item_key(key) if is_secret_key(key) else key
        item = self.client.get_item(TableName=self.table_name, Key={"write_key": {"S": item_key}}).get("Item")
        return Site.model_validate(from_attribute_map(item)) if item else None

    def sites_named_all(self) -> list[Site]:
        # The Sites table holds a handful of items, read only by operator commands.
        sites: list[Site] = []
        for page in self.client.get_paginator("scan").paginate(TableName=self.table_name):
            sites.extend(Site.model_validate(from_attribute_map(i)) for i in page["Items"])
        return sorted(sites, key=lambda s: (s.name, s.trust, s.created_at))

    def sites_named(self, name: str, trust: Trust = Trust.PUBLIC) -> list[Site]:
        return [s for s in self.sites_named_all() if s.name == name and s.trust is trust]

    def add(
        self,
        name: str,
        origins: list[str],
        write_key: str | None = None,
        *,
        secret_key: str | None = None,
        identity_secret: str | None = None,
    ) -> SiteCredentials:
        """Add a site with its three credentials, or give an existing site (same name) another write
        key with these origins; an existing site keeps its identity secret and server keys unless
        new ones are given. The secret key is returned once and never stored in clear."""
        now = clock.now()
        existing = [s for s in self.sites_named(name) if s.is_active(now)]
        new_site = not existing
        identity_secret = identity_secret or (existing[0].identity_secret if existing else None)
        identity_secret = identity_secret or new_identity_secret()
        site = Site(
            write_key=write_key or new_write_key(),
            site_id=existing[0].site_id if existing else f"site_{uuid.uuid4().hex[:12]}",
            name=name,
            origins=origins,
            created_at=now,
            identity_secret=identity_secret,
        )
        self._put(site)
        if secret_key is None and new_site:
            secret_key = new_secret_key()
        if secret_key is not None:
            self._put_secret_key(site, secret_key)
        return SiteCredentials(site, secret_key, identity_secret if new_site else None)

    def _put(self, site: Site) -> None:
        self.client.put_item(TableName=self.table_name, Item=to_attribute_map(site.model_dump()))

    def _put_secret_key(self, site: Site, secret_key: str) -> None:
        if not is_secret_key(secret_key):
            raise ValueError(f"a secret key starts with {SECRET_KEY_PREFIX}")
        self._put(
            Site(
                write_key=secret_key_item_key(secret_key),
                site_id=site.site_id,
                name=site.name,
                # A secret key is for servers; a browser (a request with an Origin) using it has
                # leaked it, and is refused (cems.collect).
                origins=[],
                created_at=clock.now(),
                trust=Trust.SERVER,
            )
        )

    def rotate(
        self, name: str, grace: timedelta, origins: list[str] | None = None
    ) -> tuple[Site, list[Site]]:
        """A new write key for a site; the old ones keep working for `grace`, so tags can be updated."""
        existing = [s for s in self.sites_named(name) if s.is_active(clock.now())]
        if not existing:
            raise LookupError(f"no site named {name!r}")
        new = self.add(name, origins if origins is not None else existing[0].origins).site
        return new, self._retire([s for s in existing if s.write_key != new.write_key], grace)

    def rotate_secrets(self, name: str, grace: timedelta) -> SiteCredentials:
        """A new secret server key and identity secret. The old server keys keep working for `grace`;
        user hashes made with the old identity secret verify for `grace` too, so pages cached or
        open in a browser while the shop switches keep working."""
        now = clock.now()
        public = [s for s in self.sites_named(name) if s.is_active(now)]
        if not public:
            raise LookupError(f"no site named {name!r}")
        identity_secret = new_identity_secret()
        for site in public:
            self._put(
                site.model_copy(
                    update={
                        "identity_secret": identity_secret,
                        "previous_identity_secret": site.identity_secret,
                        "previous_identity_secret_until": now + grace,
                    }
                )
            )
        self._retire([s for s in self.sites_named(name, Trust.SERVER) if s.is_active(now)], grace)
        secret_key = new_secret_key()
        self._put_secret_key(public[0], secret_key)
        return SiteCredentials(public[0], secret_key, identity_secret)

    def _retire(self, keys: list[Site], grace: timedelta) -> list[Site]:
        retiring = []
        now = clock.now()
        for old in keys:
            expires_at = min(old.expires_at or datetime.max.replace(tzinfo=now.tzinfo), now + grace)
            retired = old.model_copy(update={"expires_at": expires_at})
            self._put(retired)
            retiring.append(retired)
        return retiring
