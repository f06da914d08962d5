"""The store catalog cache and the validator that the CLI, the API hook and
the upload pipeline share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from volume_image import errors
from volume_image.core import specs, stores

__all__ = ["REFRESH_AFTER", "StoreCatalogCache", "Validator"]

LOG = logging.getLogger(__name__)

#: seconds after which a store missing from the cached catalog makes
#: :meth:`Validator.check_store` ask Glance again
REFRESH_AFTER = 1.0


class StoreCatalogCache:
    """A thread-safe, time-limited cache of one Glance's store catalog.

    Concurrent callers with a cold cache make one request between them:
    the fetch runs under a lock, and a caller that waited for it finds the
    fresh catalog.  A failed fetch is not cached.

    :param fetch: returns a fresh catalog (e.g.
        :meth:`GlanceClient.get_store_catalog
        <volume_image.clients.glance.GlanceClient.get_store_catalog>`).
    :param ttl: seconds a catalog is reused; 0 disables the cache.
    :param clock: a monotonic clock, replaceable in tests.
    """

    def __init__(
        self,
        fetch: Callable[[], stores.StoreCatalog],
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._catalog: stores.StoreCatalog | None = None
        self._expires = 0.0
        self._fetched = 0.0

    def get(self, *, refresh: bool = False) -> stores.StoreCatalog:
        """Return the catalog, fetching it when stale or asked to.

        :param refresh: ignore the cached catalog.
        :raises GlanceError: the fetch failed.
        """
        with self._lock:
            now = self._clock()
            if (
                not refresh
                and self._catalog is not None
                and now < self._expires
            ):
                return self._catalog
            catalog = self._fetch()
            self._catalog = catalog
            self._fetched = self._clock()
            self._expires = self._fetched + self._ttl
            return catalog

    def age(self) -> float | None:
        """Seconds since the catalog was fetched, or None if there is
        none.
        """
        with self._lock:
            if self._catalog is None:
                return None
            return self._clock() - self._fetched

    @classmethod
    def fixed(cls, catalog: stores.StoreCatalog) -> StoreCatalogCache:
        """A cache that always holds ``catalog`` (a refresh gets it
        again): to validate against a list fetched beforehand, as
        ``audit`` does, with no Glance to ask.
        """
        return cls(lambda: catalog, ttl=float("inf"))


class Validator:
    """The one way to validate extra specs and store ids, used by the
    command line, the API hook, ``audit`` and the uploader.

    :param cache: the catalog cache to read.
    :param asks: how many fresh lists to fetch when a store is missing
        from the cached one, until one lists it (a load balancer sends
        each request to the next Glance node, and nodes mid-way through a
        config change disagree).
    :param refresh_after: a store missing from a catalog younger than
        this many seconds is refused without asking again; on an API's
        request path this bounds what a stream of bad ids costs.
    """

    def __init__(
        self,
        cache: StoreCatalogCache,
        *,
        asks: int = 1,
        refresh_after: float = REFRESH_AFTER,
    ) -> None:
        self.cache = cache
        self.asks = asks
        self.refresh_after = refresh_after

    def validate_extra_specs(
        self, extra_specs: Mapping[str, Any], *, strict_case: bool = False
    ) -> specs.SplitSpecs:
        """Check a whole extra-spec set; Glance is asked only when a store
        is named and passes the rules that need no Glance, so specs
        without the namespace validate with Glance down.

        :param extra_specs: the specs of one write.
        :param strict_case: refuse namespace keys that are not lower-case,
            as the API hook does (Cinder would ignore them).
        :returns: the specs split at the ``image_service:`` namespace.
        :raises SpecError: a rule failed (also
            :class:`~volume_image.errors.MultiStoreDisabled`).
        :raises GlanceError: a store is named and Glance cannot be asked.
        """
        split = specs.split_extra_specs(extra_specs, strict_case=strict_case)
        if split.has_store_id:
            self.check_store(
                split.store_id, split.original_keys[specs.STORE_ID_KEY]
            )
        return split

    def check_store(
        self, store_id: object, key: str = specs.STORE_ID_KEY
    ) -> stores.StoreInfo:
        """Check one store id against the cached catalog.

        The rules that need no Glance run first, so a malformed or
        reserved id never costs a request.  A store missing from a catalog
        older than ``refresh_after`` seconds makes it ask Glance again, up
        to ``asks`` times: a store added to Glance must not be refused for
        up to the cache's TTL.

        :param store_id: the spec value.
        :param key: the spec key, for the messages.
        :returns: the store.
        :raises SpecError: a rule failed.
        :raises GlanceError: Glance cannot be asked.
        """
        checked = stores.check_store_id_syntax(store_id, key)
        try:
            return stores.check_store_id(store_id, self.cache.get(), key)
        except errors.UnknownStore:
            age = self.cache.age()
            if age is not None and age < self.refresh_after:
                raise
        fresh = self.ask_again(checked)
        return stores.check_store_id(store_id, fresh, key)

    def ask_again(self, store_id: str | None) -> stores.StoreCatalog:
        """Fresh store lists, up to ``asks`` of them, until one lists
        ``store_id``.

        :returns: the list that names the store, or the last one asked.
        :raises GlanceError: Glance cannot be asked.
        """
        catalog = self.cache.get(refresh=True)
        missed = 0
        while (
            store_id is not None
            and catalog.get(store_id) is None
            and missed < self.asks - 1
        ):
            missed += 1
            catalog = self.cache.get(refresh=True)
        if missed and store_id is not None and catalog.get(store_id):
            LOG.warning(
                "store %r: one answer of Glance did not list it, another "
                "does: the Glance nodes disagree",
                store_id,
            )
        return catalog
