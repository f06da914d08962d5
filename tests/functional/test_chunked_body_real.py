"""A request body without Content-Length, on a real cinder-api 29 served
by gunicorn, which passes chunked bodies to the application with
``wsgi.input_terminated`` set (as mod_wsgi does with
``WSGIChunkedRequest On``).  webob, and so Cinder, reads such a body; so
must the filter, or a bad store id is stored with a 200.

Side by side: upstream cinder-api and cinder-api with our filter, both
under gunicorn, both asking the real Glance 33.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness import launcher

from .cinder_cases import KEY, CinderApi
from .test_api_filter_real import start_all

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def gunicorn_cinders(
    glance_server: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CinderApi, CinderApi]]:
    """(upstream, filtered) cinder-api under gunicorn."""
    upstream = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-gunicorn-upstream"),
        glance_server.url,
        with_filter=False,
        wsgi_server="gunicorn",
    )
    filtered = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-gunicorn-filtered"),
        glance_server.url,
        filter_options={
            "glance_endpoint": glance_server.url,
            "store_cache_ttl": "0",
        },
        wsgi_server="gunicorn",
    )
    start_all(upstream, filtered)
    yield CinderApi(upstream), CinderApi(filtered)
    upstream.stop()
    filtered.stop()


def chunked(api: CinderApi, method: str, path: str, body: Any) -> Any:
    """Send ``body`` as JSON in two chunks, with no Content-Length."""
    data = json.dumps(body).encode()
    half = len(data) // 2
    resp = requests.request(
        method,
        api.root + path,
        data=iter([data[:half], data[half:]]),
        headers=dict(api.headers, **{"Content-Type": "application/json"}),
        timeout=60,
    )
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in resp.request.headers
    return resp


def new_type(name: str, store: str) -> dict[str, Any]:
    return {"volume_type": {"name": name, "extra_specs": {KEY: store}}}


def test_gunicorn_is_the_server_and_cinder_reads_chunked_bodies(
    gunicorn_cinders: tuple[CinderApi, CinderApi],
) -> None:
    upstream, _ = gunicorn_cinders
    resp = chunked(upstream, "POST", "/types", new_type("up-good", "fast"))
    assert resp.status_code == 200, resp.text
    assert "gunicorn" in resp.headers.get("Server", "").lower()
    type_id = resp.json()["volume_type"]["id"]
    assert upstream.specs(type_id) == {KEY: "fast"}


def test_upstream_stores_a_bad_store_id_sent_chunked(
    gunicorn_cinders: tuple[CinderApi, CinderApi],
) -> None:
    """The hole is real: Cinder itself does not check inline specs."""
    upstream, _ = gunicorn_cinders
    resp = chunked(upstream, "POST", "/types", new_type("up-bad", "nosuch"))
    assert resp.status_code == 200, resp.text
    assert "up-bad" in upstream.type_names()


@pytest.mark.parametrize(
    ("method", "path_of", "body"),
    [
        ("POST", lambda t: "/types", new_type("f-bad", "nosuch")),
        (
            "POST",
            lambda t: f"/types/{t}/extra_specs",
            {"extra_specs": {KEY: "os_glance_staging_store"}},
        ),
        ("PUT", lambda t: f"/types/{t}/extra_specs/{KEY}", {KEY: "web"}),
    ],
    ids=["create-type", "set-specs", "set-one-spec"],
)
def test_the_filter_checks_a_chunked_body(
    gunicorn_cinders: tuple[CinderApi, CinderApi],
    method: str,
    path_of: Any,
    body: Any,
) -> None:
    _, filtered = gunicorn_cinders
    type_id = filtered.create_type({KEY: "fast"})
    before = filtered.type_names()
    resp = chunked(filtered, method, path_of(type_id), body)
    assert resp.status_code == 400, resp.text
    # the filter's own message (Cinder without it answers 400 too on the
    # extra-spec routes, but with its own words and no store named)
    message = resp.json()["badRequest"]["message"]
    assert KEY in message
    assert (
        "nosuch" in message or "reserved" in message or "read-only" in message
    )
    assert filtered.specs(type_id) == {KEY: "fast"}
    assert filtered.type_names() == before


def test_a_good_chunked_body_reaches_cinder(
    gunicorn_cinders: tuple[CinderApi, CinderApi],
) -> None:
    _, filtered = gunicorn_cinders
    resp = chunked(filtered, "POST", "/types", new_type("f-good", "cheap"))
    assert resp.status_code == 200, resp.text
    type_id = resp.json()["volume_type"]["id"]
    assert filtered.specs(type_id) == {KEY: "cheap"}
