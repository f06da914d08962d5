"""The store_validation filter in a real cinder-api 29 pipeline, side by
side with the same cinder-api without it.

Both ask Glance 33 through :class:`GlanceProxy`, which can make the store
list carry JSON booleans and can refuse connections (Glance down).  The
filter's catalog cache is off here (``store_cache_ttl = 0``) so that each
case sees the Glance of that moment.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import launcher

from . import cinder_cases
from .cinder_cases import KEY, CinderApi, Outcome
from .helpers import GlanceProxy

pytestmark = pytest.mark.functional

DOC_TABLE = (
    Path(__file__).parents[2] / "doc" / "source" / "cinder-comparison.inc"
)


def start_all(*servers: launcher.Server) -> None:
    """Start servers side by side (each one spends seconds in db sync)."""
    failures: list[BaseException] = []

    def run(server: launcher.Server) -> None:
        try:
            server.start()
        except BaseException as exc:  # re-raised below, in the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        for s in servers:
            s.stop()
        raise failures[0]


@pytest.fixture(scope="module")
def proxy(glance_server: launcher.GlanceServer) -> Iterator[GlanceProxy]:
    p = GlanceProxy(glance_server.url)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def cinders(
    proxy: GlanceProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CinderApi, CinderApi]]:
    """(upstream cinder-api, cinder-api with our filter), same Glance."""
    upstream = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-upstream"),
        proxy.url,
        with_filter=False,
    )
    filtered = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-filtered"),
        proxy.url,
        filter_options={"glance_endpoint": proxy.url, "store_cache_ttl": "0"},
    )
    start_all(upstream, filtered)
    yield CinderApi(upstream), CinderApi(filtered)
    upstream.stop()
    filtered.stop()


def _down_case(
    apis: tuple[CinderApi, ...], proxy: GlanceProxy, case: cinder_cases.Case
) -> list[Outcome]:
    """Send ``case`` to each API while Glance refuses connections."""
    # the types are made while Glance answers; then it goes away
    type_ids = [api.create_type({KEY: "fast"}) for api in apis]
    proxy.stop()
    try:
        answers = [
            api.request(
                "POST",
                f"/types/{type_id}/extra_specs",
                {"extra_specs": case.body},
            )
            for api, type_id in zip(apis, type_ids, strict=True)
        ]
    finally:
        proxy.start()
    return [
        Outcome(
            resp.status_code,
            cinder_cases.message_of(resp),
            api.specs(type_id) != {KEY: "fast"},
            0,
        )
        for api, type_id, resp in zip(apis, type_ids, answers, strict=True)
    ]


def _run(
    api: CinderApi, proxy: GlanceProxy, case: cinder_cases.Case, mode: str
) -> Outcome:
    if mode == "down":
        (outcome,) = _down_case((api,), proxy, case)
        return outcome
    proxy.boolean_flags = mode == "boolean"
    try:
        return cinder_cases.run_case(api, case, proxy.store_calls)
    finally:
        proxy.boolean_flags = False


ALL_CASES = (
    [(c, "normal") for c in cinder_cases.CASES]
    + [(c, "boolean") for c in cinder_cases.BOOLEAN_CASES]
    + [(c, "down") for c in cinder_cases.DOWN_CASES]
)


@pytest.mark.parametrize(
    ("case", "mode"), ALL_CASES, ids=[c.name for c, _ in ALL_CASES]
)
def test_write_paths(
    cinders: tuple[CinderApi, CinderApi],
    proxy: GlanceProxy,
    case: cinder_cases.Case,
    mode: str,
) -> None:
    """Every write path: refused with 400 (503 with Glance down) and
    nothing stored, or stored when valid.
    """
    ours = _run(cinders[1], proxy, case, mode)
    assert ours.status == case.expect, ours
    assert ours.stored == (case.expect == 200), ours
    assert case.fragment in ours.message, ours
    if mode != "down" and KEY in str(case.body) and case.expect == 400:
        # checked locally or against the store list: never more than the
        # one catalog fetch (the cache is off here)
        assert ours.glance_calls <= 1


def test_upstream_bypasses_are_real(
    cinders: tuple[CinderApi, CinderApi], proxy: GlanceProxy
) -> None:
    """The gaps the filter closes exist in the upstream we compare with."""
    upstream, _ = cinders
    by_name = {c.name: c for c, _ in ALL_CASES}
    for name, mode in [
        ("unknown store, inline in POST /types", "normal"),
        ("key in another case", "normal"),
        ("value with a space", "normal"),
        ("read-only store, flag as JSON boolean", "boolean"),
    ]:
        outcome = _run(upstream, proxy, by_name[name], mode)
        if name == "value with a space":
            # refused, but as 404 "not enabled", where 400 is meant
            assert outcome.status == 404, outcome
        else:
            assert (outcome.status, outcome.stored) == (200, True), name
    (down,) = _down_case((upstream,), proxy, cinder_cases.DOWN_CASES[0])
    assert down.status == 500


def test_put_type_with_specs(cinders: tuple[CinderApi, CinderApi]) -> None:
    _, api = cinders
    type_id = api.create_type({KEY: "fast"})
    resp = api.request(
        "PUT",
        f"/types/{type_id}",
        {"volume_type": {"extra_specs": {KEY: "web"}}},
    )
    assert resp.status_code == 400
    assert "read-only" in resp.json()["badRequest"]["message"]
    # without a bad store, Cinder's own schema answers (it takes no specs)
    resp = api.request(
        "PUT",
        f"/types/{type_id}",
        {"volume_type": {"extra_specs": {KEY: "cheap"}}},
    )
    assert resp.status_code == 400
    assert "extra_specs" in resp.json()["badRequest"]["message"]
    assert api.specs(type_id) == {KEY: "fast"}


def test_projectless_routes(cinders: tuple[CinderApi, CinderApi]) -> None:
    _, api = cinders
    type_id = api.create_type()
    for path in (
        f"/v3/types/{type_id}/extra_specs",
        f"/v3/types/{type_id}/extra_specs.json",
    ):
        resp = cinder_cases.requests.post(
            api.server.url + path,
            json={"extra_specs": {KEY: "nosuch"}},
            headers=api.headers,
            timeout=30,
        )
        assert resp.status_code == 400, (path, resp.text)
        assert "no store 'nosuch'" in resp.json()["badRequest"]["message"]
    assert api.specs(type_id) == {}


def test_good_body_reaches_cinder_unchanged(
    cinders: tuple[CinderApi, CinderApi],
) -> None:
    _, api = cinders
    type_id = api.create_type()
    note = 'caf\u00e9 \u2603 "quoted" \\ end'
    raw = (
        '{\n  "extra_specs" : {"note": "caf\\u00e9 \u2603 \\"quoted\\" '
        '\\\\ end",\n "image_service:store_id":"cheap"}}'
    ).encode()
    resp = api.request("POST", f"/types/{type_id}/extra_specs", raw=raw)
    assert resp.status_code == 200, resp.text
    assert api.specs(type_id) == {"note": note, KEY: "cheap"}


def test_other_requests_pass(cinders: tuple[CinderApi, CinderApi]) -> None:
    upstream, filtered = cinders
    for api in cinders:
        type_id = api.create_type({KEY: "cheap"})
        resp = api.request("DELETE", f"/types/{type_id}/extra_specs/{KEY}")
        assert resp.status_code == 202
        resp = api.request("GET", "/types/nosuch-id")
        assert resp.status_code == 404
    a = upstream.request("GET", "/types?is_public=None")
    b = filtered.request("GET", "/types?is_public=None")
    assert a.headers["Content-Type"] == b.headers["Content-Type"]


def test_comparison_table_in_docs(
    cinders: tuple[CinderApi, CinderApi], proxy: GlanceProxy
) -> None:
    """The docs' table of upstream's answers and ours is what this run
    measures (VOLUME_IMAGE_WRITE_DOCS=1 rewrites it).
    """
    rows = []
    for case, mode in ALL_CASES:
        if mode == "down":
            upstream, ours = _down_case(cinders, proxy, case)
        else:
            upstream = _run(cinders[0], proxy, case, mode)
            ours = _run(cinders[1], proxy, case, mode)
        rows.append((case, upstream, ours))
    text = cinder_cases.render_table(rows)
    if os.environ.get("VOLUME_IMAGE_WRITE_DOCS") == "1":
        DOC_TABLE.write_text(text)
    current = DOC_TABLE.read_text() if DOC_TABLE.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(True), text.splitlines(True), "docs", "measured"
        )
    )
    assert not diff, diff


_HEADERS = (
    "OpenStack-API-Version",
    "Vary",
    "x-openstack-request-id",
    "x-compute-request-id",
)


def test_a_refusal_answers_with_cinders_headers(
    cinders: tuple[CinderApi, CinderApi],
) -> None:
    """Our 400 carries what Cinder's own 400 carries: the version asked
    for, Vary, and the request id in both headers.
    """
    _, api = cinders
    type_id = api.create_type({KEY: "fast"})
    headers = dict(api.headers, **{"OpenStack-API-Version": "volume 3.59"})
    ours = cinder_cases.requests.post(
        f"{api.root}/types/{type_id}/extra_specs",
        json={"extra_specs": {KEY: "nosuch"}},
        headers=headers,
        timeout=30,
    )
    # Cinder's own refusal: its schema takes no specs in PUT /types/{id}
    cinders_own = cinder_cases.requests.put(
        f"{api.root}/types/{type_id}",
        json={"volume_type": {"extra_specs": {KEY: "cheap"}}},
        headers=headers,
        timeout=30,
    )
    assert (ours.status_code, cinders_own.status_code) == (400, 400)
    assert "no store 'nosuch'" in ours.json()["badRequest"]["message"]
    for resp in (ours, cinders_own):
        assert all(h in resp.headers for h in _HEADERS), resp.headers
        assert resp.headers["OpenStack-API-Version"] == "volume 3.59"
        assert resp.headers["Vary"] == "OpenStack-API-Version"
        assert resp.headers["x-openstack-request-id"].startswith("req-")
        assert (
            resp.headers["x-compute-request-id"]
            == resp.headers["x-openstack-request-id"]
        )
    assert set(ours.headers) >= {
        h for h in cinders_own.headers if h.lower() != "content-length"
    } - {"Date", "Server", "Connection"}
    # without the header, the minimum version, as Cinder answers
    plain = api.request(
        "POST", f"/types/{type_id}/extra_specs", {"extra_specs": {KEY: "x"}}
    )
    assert plain.headers["OpenStack-API-Version"] == "volume 3.0"
    # a version Cinder refuses is Cinder's to answer (406), not ours
    bad = cinder_cases.requests.post(
        f"{api.root}/types/{type_id}/extra_specs",
        json={"extra_specs": {KEY: "nosuch"}},
        headers=dict(api.headers, **{"OpenStack-API-Version": "volume 9.9"}),
        timeout=30,
    )
    assert bad.status_code == 406, bad.text
    assert api.specs(type_id) == {KEY: "fast"}


def test_cinder_client_prints_the_request_id_of_the_log(
    cinders: tuple[CinderApi, CinderApi],
) -> None:
    """``cinder type-key ... set`` refused by the filter prints a
    Request-ID, and cinder-api's log line of the refusal has it.
    """
    _, api = cinders
    type_id = api.create_type()
    done = subprocess.run(
        [
            str(launcher.ensure_venv("clients") / "bin" / "cinder"),
            "--os-auth-type", "noauth",
            "--os-user-id", "admin",
            "--os-project-id", launcher.PROJECT_ID,
            "--os-endpoint", f"{api.server.url}/v3",
            "--os-volume-api-version", "3.59",
            "type-key", type_id, "set", f"{KEY}=nosuch",
        ],
        capture_output=True, text=True, timeout=120, check=False,
        env={
            k: v for k, v in os.environ.items()
            if not k.startswith(("OS_", "CINDER_", "PYTHON"))
        },
    )  # fmt: skip
    assert done.returncode != 0
    match = re.search(r"\(Request-ID: (req-[0-9a-f-]{36})\)", done.stderr)
    assert match, done.stderr
    assert "Glance has no store 'nosuch'" in done.stderr
    request_id = match.group(1)
    refused = [
        line
        for line in api.server.log_path.read_text(
            errors="replace"
        ).splitlines()
        if "refused POST" in line and request_id in line
    ]
    assert refused, f"no log line of the refusal names {request_id}"
    assert api.specs(type_id) == {}
