"""The store catalog cache and the validator that the CLI, the API hook and
the upload pipeline share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from volume_image import errors, specs, stores

__all__ = ["REFRESH_AFTER", "StoreCatalogCache", "Validator"]

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
        <volume_image.glance.GlanceClient.get_store_catalog>`).
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

    def invalidate(self) -> None:
        """Forget the cached catalog."""
        with self._lock:
            self._catalog = None


class Validator:
    """Validate ``image_service:store_id`` against a cached catalog.

    :param cache: the catalog cache to read.
    """

    def __init__(self, cache: StoreCatalogCache) -> None:
        self.cache = cache

    def validate_extra_specs(
        self, extra_specs: Mapping[str, Any], *, strict_case: bool = False
    ) -> specs.SplitSpecs:
        """Check a whole extra-spec set; Glance is asked only if needed.

        :param extra_specs: the specs of one write.
        :param strict_case: refuse namespace keys that are not lower-case,
            as the API hook does (Cinder would ignore them).
        :returns: the specs split at the ``image_service:`` namespace.
        :raises SpecError: a rule failed.
        :raises GlanceError: a store is named and Glance cannot be asked.
        """
        return specs.validate_extra_specs(
            extra_specs, self.cache.get, strict_case=strict_case
        )

    def check_store(
        self, store_id: object, key: str = specs.STORE_ID_KEY
    ) -> stores.StoreInfo:
        """Check one store id against the cached catalog.

        The rules that need no Glance run first, so a malformed or
        reserved id never costs a request.  A store missing from a catalog
        older than :data:`REFRESH_AFTER` seconds makes it ask Glance once
        more: a store added to Glance must not be refused for up to the
        cache's TTL, and a stream of bad ids costs about one fetch a
        second at most.

        :param store_id: the spec value.
        :param key: the spec key, for the messages.
        :raises SpecError: a rule failed.
        :raises MultiStoreDisabled: Glance has no multi-store.
        :raises GlanceError: Glance cannot be asked.
        """
        stores.check_store_id_syntax(store_id, key)
        try:
            return stores.check_store_id(store_id, self.cache.get(), key)
        except errors.UnknownStore:
            age = self.cache.age()
            if age is not None and age < REFRESH_AFTER:
                raise
            fresh = self.cache.get(refresh=True)
            return stores.check_store_id(store_id, fresh, key)
