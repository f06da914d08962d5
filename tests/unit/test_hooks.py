"""The API hook: statuses, the refresh of an unknown store, fail-open."""

from __future__ import annotations

import pytest

from volume_image import errors
from volume_image.api import hook as hooks
from volume_image.core import stores, validation

KEY = "image_service:store_id"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def catalog(*ids: str) -> stores.StoreCatalog:
    return stores.parse_stores(
        {"stores": [{"id": i, "default": i == ids[0]} for i in ids]}
    )


def make_hook(
    answers: list[stores.StoreCatalog | Exception], **kw: bool
) -> tuple[hooks.ExtraSpecsHook, list[int], Clock]:
    calls: list[int] = []
    clock = Clock()

    def fetch() -> stores.StoreCatalog:
        calls.append(1)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = validation.StoreCatalogCache(fetch, ttl=60, clock=clock)
    return (
        hooks.ExtraSpecsHook(validation.Validator(cache), **kw),
        calls,
        clock,
    )


def test_valid_returns_none() -> None:
    hook, calls, _ = make_hook([catalog("fast", "cheap")])
    assert hook.check({KEY: "cheap", "x": "y"}) is None
    assert calls == [1]


def test_spec_errors_are_400() -> None:
    hook, _, _ = make_hook([catalog("fast")])
    for specs in ({KEY: "nosuch"}, {"IMAGE_SERVICE:store_id": "fast"}):
        with pytest.raises(errors.SpecError) as info:
            hook.check(specs)
        assert info.value.api_status == 400


def test_store_added_in_glance_is_found_by_one_refresh() -> None:
    hook, calls, clock = make_hook([catalog("fast"), catalog("fast", "new")])
    hook.check({KEY: "fast"})
    clock.now += 5
    hook.check({KEY: "new"})
    assert len(calls) == 2


def test_unknown_store_right_after_a_fetch_is_not_refetched() -> None:
    hook, calls, _ = make_hook([catalog("fast")])
    with pytest.raises(errors.UnknownStore):
        hook.check({KEY: "nosuch"})
    with pytest.raises(errors.UnknownStore):
        hook.check({KEY: "nosuch"})
    assert len(calls) == 1


@pytest.mark.parametrize(
    "cause",
    [
        errors.GlanceUnavailable("refused"),
        errors.GlanceAuthError("401", status_code=401),
        errors.BadStoreCatalog("not JSON"),
    ],
)
def test_glance_trouble_is_503(cause: errors.GlanceError) -> None:
    hook, _, _ = make_hook([cause])
    with pytest.raises(errors.StoreCheckUnavailable) as info:
        hook.check({KEY: "fast"})
    assert info.value.api_status == 503
    assert info.value.__cause__ is cause


def test_multistore_disabled_stays_400() -> None:
    hook, _, _ = make_hook([errors.MultiStoreDisabled("no multi-store")])
    with pytest.raises(errors.MultiStoreDisabled) as info:
        hook.check({KEY: "fast"})
    assert info.value.api_status == 400


def test_fail_open() -> None:
    hook, _, _ = make_hook([errors.GlanceUnavailable("down")], fail_open=True)
    assert hook.check({KEY: "fast"}) is None
    with pytest.raises(errors.ReservedStore):
        hook.check({KEY: "os_glance_staging_store"})


def test_a_hung_glance_costs_one_short_wait() -> None:
    """A Glance that accepts the connection and never answers: the hook
    gives up after ``api_timeout``, once, without retrying.
    """
    import socket
    import time

    from oslo_config import cfg

    from volume_image import config

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepted by the kernel, never answered
    try:
        conf = cfg.ConfigOpts()
        config.register_opts(conf)
        config.register_adapter_opts(conf)
        conf(args=[])
        port = listener.getsockname()[1]
        conf.set_override(
            "endpoint_override", f"http://127.0.0.1:{port}", group="glance"
        )
        conf.set_override("auth_type", "none", group="glance")
        conf.set_override("api_timeout", 0.5, group="volume_image")
        hook = hooks.ExtraSpecsHook.from_conf(conf)
        t0 = time.monotonic()
        with pytest.raises(errors.StoreCheckUnavailable):
            hook.check({"image_service:store_id": "cheap"})
        assert time.monotonic() - t0 < 2.5
    finally:
        listener.close()
