"""``volume-image audit`` and the filter against a Glance whose stores
change: a store removed from the config, multi-store turned off.

This module has its own Glance, restarted with another configuration
per test, and a cinder-api with the filter in front of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import launcher

from .cinder_cases import KEY, CinderApi
from .test_api_filter_real import start_all
from .test_validate_real import cli

pytestmark = pytest.mark.functional


class Env:
    def __init__(
        self,
        glance: launcher.GlanceServer,
        cinder: launcher.CinderServer,
        fail_open: launcher.CinderServer,
    ) -> None:
        self.glance = glance
        self.cinder = cinder
        self.api = CinderApi(cinder)
        self.fail_open = CinderApi(fail_open)

    def reconfigure(
        self, *, multistore: bool = True, without: tuple[str, ...] = ()
    ) -> None:
        """Restart Glance (same port, same database) if it must change."""
        if (
            self.glance.multistore == multistore
            and tuple(self.glance.without) == without
            and self.glance.pid
        ):
            return
        self.glance.stop()
        self.glance.multistore = multistore
        self.glance.without = list(without)
        self.glance.start()

    def audit_file(self, path: Path) -> tuple[int, dict[str, Any], str]:
        """``audit --from-file PATH -f json``: exit code, report, stderr."""
        r = cli(
            "--os-endpoint-override",
            self.glance.url,
            "audit",
            "--from-file",
            str(path),
            "-f",
            "json",
        )
        return r.returncode, json.loads(r.stdout or "null"), r.stderr

    def audit(self, *args: str) -> tuple[int, str, str]:
        r = cli(
            "--os-auth-type",
            "admin_token",
            "--os-endpoint",
            self.glance.url,
            "--os-token",
            self.cinder.headers["X-Auth-Token"],
            "audit",
            "--block-storage-endpoint",
            self.cinder.api_url,
            *args,
        )
        return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    glance = launcher.GlanceServer(
        tmp_path_factory.mktemp("glance-audit"), processes=1
    )
    glance.start()
    options = {"glance_endpoint": glance.url, "store_cache_ttl": "0"}
    cinder = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-audit"),
        glance.url,
        filter_options=options,
    )
    fail_open = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-fail-open"),
        glance.url,
        filter_options=dict(options, fail_open="true"),
    )
    try:
        start_all(cinder, fail_open)
        yield Env(glance, cinder, fail_open)
    finally:
        fail_open.stop()
        cinder.stop()
        glance.stop()


def test_single_store_glance_refuses_a_store_spec(env: Env) -> None:
    env.reconfigure(multistore=False)
    try:
        type_id = env.api.create_type()
        resp = env.api.request(
            "POST",
            f"/types/{type_id}/extra_specs",
            {"extra_specs": {KEY: "fast"}},
        )
        assert resp.status_code == 400, resp.text
        assert "multi-store" in resp.json()["badRequest"]["message"]
        resp = env.api.request(
            "POST",
            f"/types/{type_id}/extra_specs",
            {"extra_specs": {"volume_backend_name": "lvm"}},
        )
        assert resp.status_code == 200, resp.text
        assert env.api.specs(type_id) == {"volume_backend_name": "lvm"}
    finally:
        env.reconfigure()


def test_audit_after_a_store_is_removed(env: Env, tmp_path: Path) -> None:
    env.reconfigure()
    on_cheap = env.api.create_type({KEY: "cheap"})
    on_fast = env.api.create_type({KEY: "fast"})
    plain = env.api.create_type({"volume_backend_name": "lvm"})
    rc, out, err = env.audit("-f", "json")
    assert rc == 0, err
    assert json.loads(out)["broken"] == []

    env.reconfigure(without=("cheap",))
    try:
        rc, out, err = env.audit("-f", "json")
        assert rc == 3, err
        report = json.loads(out)
        assert report["stores"] == ["fast", "web"]
        broken = {f["type_id"]: f for f in report["broken"]}
        assert set(broken) == {on_cheap}
        assert broken[on_cheap]["reason"] == "UnknownStore"
        assert broken[on_cheap]["value"] == "cheap"
        assert "fast" in broken[on_cheap]["message"]
        assert report["checked"] >= 3
        assert {on_fast, plain}.isdisjoint(broken)

        rc, out, _ = env.audit()
        assert rc == 3
        header, _, *rows = out.splitlines()
        assert header.split() == [
            "type",
            "id",
            "key",
            "value",
            "problem",
            "suggestion",
        ]
        assert any(on_cheap in row and "UnknownStore" in row for row in rows)
        assert "1 of" in out

        # the same check from a saved API answer, with no cinder-api
        saved = tmp_path / "types.json"
        resp = env.api.request("GET", "/types?is_public=None")
        saved.write_text(resp.text)
        rc, from_file, err = env.audit_file(saved)
        assert rc == 3, err
        assert [f["type_id"] for f in from_file["broken"]] == [on_cheap]
    finally:
        env.reconfigure()
    rc, out, err = env.audit()
    assert rc == 0, err
    assert "volume types are valid" in out


def test_audit_openstackclient_file(env: Env, tmp_path: Path) -> None:
    env.reconfigure()
    listing = [
        {
            "ID": "a1",
            "Name": "gold",
            "Is Public": True,
            "Description": None,
            "Properties": {KEY: "web", "volume_backend_name": "lvm"},
        },
        {
            "ID": "a2",
            "Name": "silver",
            "Is Public": True,
            "Description": None,
            "Properties": "image_service:store_id='cheap', x='1'",
        },
        {"ID": "a3", "Name": "bronze", "Properties": {}},
    ]
    path = tmp_path / "osc.json"
    path.write_text(json.dumps(listing))
    rc, report, err = env.audit_file(path)
    assert rc == 3, err
    assert report["checked"] == 3
    assert [(f["type_name"], f["reason"]) for f in report["broken"]] == [
        ("gold", "ReadOnlyStore")
    ]


def test_audit_errors(env: Env, tmp_path: Path) -> None:
    env.reconfigure()
    bad = tmp_path / "bad.json"
    bad.write_text('[{"ID": "x", "Name": "y"}]')
    r = cli(
        "--os-endpoint-override",
        env.glance.url,
        "audit",
        "--from-file",
        str(bad),
    )
    assert r.returncode == 2
    assert "use --long" in r.stderr
    # no block-storage endpoint to be found: a service error, exit 4
    r = cli("--os-endpoint-override", env.glance.url, "audit")
    assert r.returncode == 4
    assert "block-storage" in r.stderr
    assert "Traceback" not in r.stderr


def test_glance_down_fail_closed_and_fail_open(env: Env) -> None:
    """Fail closed (the default): 503, nothing stored.  fail_open: the
    write goes on to Cinder with a warning in its log; Cinder then stores
    what it does not check itself (inline specs) and answers its own 500
    where it asks Glance itself.
    """
    env.reconfigure()
    closed_type = env.api.create_type()
    open_type = env.fail_open.create_type()
    env.glance.stop()
    try:
        resp = env.api.request(
            "POST",
            f"/types/{closed_type}/extra_specs",
            {"extra_specs": {KEY: "cheap"}},
        )
        assert resp.status_code == 503, resp.text
        assert "Nothing was stored" in resp.text

        inline = env.fail_open.request(
            "POST",
            "/types",
            {"volume_type": {"name": "open-1", "extra_specs": {KEY: "cheap"}}},
        )
        assert inline.status_code == 200, inline.text
        resp = env.fail_open.request(
            "POST",
            f"/types/{open_type}/extra_specs",
            {"extra_specs": {KEY: "cheap"}},
        )
        assert resp.status_code == 500  # Cinder's own check, Glance down
        log = env.fail_open.server.base / "log" / "cinder-api.log"
        assert "fail_open: image_service:store_id='cheap' stored" in (
            log.read_text(errors="replace")
        )
    finally:
        env.reconfigure()
    assert env.api.specs(closed_type) == {}
    assert env.fail_open.specs(open_type) == {}
    assert "open-1" in env.fail_open.type_names()
