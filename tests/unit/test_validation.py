"""The catalog cache and the validator facade."""

import threading
import time

import pytest
import requests_mock

from volume_image import errors
from volume_image.clients import glance
from volume_image.core import stores, validation

from .conftest import URL, Clock

CAT = stores.parse_stores(
    {"stores": [{"id": "fast", "default": "true"}, {"id": "cheap"}]}
)


def test_ttl() -> None:
    calls = []
    clock = Clock()

    def fetch() -> stores.StoreCatalog:
        calls.append(1)
        return CAT

    cache = validation.StoreCatalogCache(fetch, ttl=60, clock=clock)
    cache.get()
    clock.now += 59
    cache.get()
    assert len(calls) == 1
    clock.now += 2
    cache.get()
    assert len(calls) == 2
    cache.get(refresh=True)
    assert len(calls) == 3


def test_ttl_zero_always_fetches() -> None:
    calls = []
    cache = validation.StoreCatalogCache(lambda: calls.append(1) or CAT, ttl=0)
    cache.get()
    cache.get()
    assert len(calls) == 2


def test_failed_fetch_is_not_cached() -> None:
    answers: list[object] = [errors.GlanceUnavailable("down"), CAT]

    def fetch() -> stores.StoreCatalog:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    cache = validation.StoreCatalogCache(fetch, ttl=60)
    with pytest.raises(errors.GlanceUnavailable):
        cache.get()
    assert cache.get() is CAT


def test_concurrent_cold_cache_fetches_once() -> None:
    calls = []

    def fetch() -> stores.StoreCatalog:
        calls.append(1)
        time.sleep(0.05)
        return CAT

    cache = validation.StoreCatalogCache(fetch, ttl=60)
    threads = [threading.Thread(target=cache.get) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_warm_cache_validation_makes_no_request(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.get(
        URL + "/v2/info/stores/detail",
        json={"stores": [{"id": "fast", "default": "true"}, {"id": "cheap"}]},
    )
    clock = Clock()
    validator = validation.Validator(
        validation.StoreCatalogCache(
            client.get_store_catalog, ttl=60, clock=clock
        )
    )
    validator.validate_extra_specs({"image_service:store_id": "cheap"})
    assert rmock.call_count == 1
    for _ in range(5):
        validator.validate_extra_specs({"image_service:store_id": "fast"})
        assert validator.check_store("cheap").id == "cheap"
        with pytest.raises(errors.UnknownStore):
            validator.check_store("nosuch")
    assert rmock.call_count == 1
    # an unknown store, once the list is older than REFRESH_AFTER: one
    # more request, so a store added to Glance is accepted at once
    clock.now += validation.REFRESH_AFTER
    with pytest.raises(errors.UnknownStore):
        validator.check_store("nosuch")
    assert rmock.call_count == 2


def test_an_unknown_store_is_asked_about_up_to_asks_times() -> None:
    lists = [
        stores.StoreCatalog(stores=(stores.StoreInfo("fast", default=True),)),
    ] * 3 + [
        stores.StoreCatalog(
            stores=(
                stores.StoreInfo("fast", default=True),
                stores.StoreInfo("new"),
            )
        )
    ]
    answers = iter(lists)
    validator = validation.Validator(
        validation.StoreCatalogCache(lambda: next(answers), ttl=60),
        asks=3,
        refresh_after=0,
    )
    # the first list and two fresh ones miss it; the third fresh one has it
    assert validator.check_store("new").id == "new"
    strict = validation.Validator(
        validation.StoreCatalogCache(lambda: lists[0], ttl=60), asks=3
    )
    with pytest.raises(errors.UnknownStore):
        strict.check_store("new")


def test_a_fixed_catalog_is_never_fetched_again() -> None:
    catalog = stores.StoreCatalog(
        stores=(stores.StoreInfo("fast", default=True),)
    )
    validator = validation.Validator(
        validation.StoreCatalogCache.fixed(catalog), refresh_after=0
    )
    with pytest.raises(errors.UnknownStore):
        validator.check_store("cheap")
    assert validator.check_store("fast").default
