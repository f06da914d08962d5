"""The store_validation filter in a keystone-authenticated cinder-api 29
pipeline (after authtoken and keystonecontext), in both ways of asking
Glance: the service credentials of its config file, or the caller's
forwarded token.  And ``audit`` finding cinder-api in the catalog.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness import launcher

from .conftest import count_requests
from .test_api_filter_real import start_all
from .test_validate_real import cli

pytestmark = pytest.mark.functional

KEY = "image_service:store_id"


class Api:
    """cinder-api calls with a real token of one user."""

    def __init__(
        self,
        server: launcher.CinderServer,
        keystone: launcher.KeystoneServer,
        user: str,
    ) -> None:
        sess = keystone.session(user)
        self.token = sess.get_token()
        project = keystone.USERS[user][1]
        self.root = f"{server.url}/v3/{keystone.project_ids[project]}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: bool = True,
    ) -> requests.Response:
        h = {"Content-Type": "application/json", **(headers or {})}
        if token:
            h["X-Auth-Token"] = str(self.token)
        return requests.request(
            method,
            self.root + path,
            data=None if body is None else json.dumps(body),
            headers=h,
            timeout=60,
        )

    def new_type(self) -> str:
        resp = self.call(
            "POST",
            "/types",
            {"volume_type": {"name": f"k-{uuid.uuid4().hex[:12]}"}},
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["volume_type"]["id"])


@pytest.fixture(scope="module")
def cinders(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, launcher.CinderServer]]:
    """Two keystone cinder-api servers with the filter: ``service`` asks
    Glance as the cinder service user (endpoint from the catalog);
    ``forward`` has no credentials and no endpoint at all: it forwards the
    caller's token and finds Glance in the caller's service catalog.
    """
    base = tmp_path_factory.mktemp("cinder-keystone")
    conf = base / "volume_image.conf"
    password, project, _ = keystone.USERS["cinder"]
    conf.write_text(
        "[glance]\n"
        "auth_type = password\n"
        f"auth_url = {keystone.auth_url}\n"
        "username = cinder\n"
        f"password = {password}\n"
        f"project_name = {project}\n"
        "user_domain_id = default\n"
        "project_domain_id = default\n"
        f"region_name = {keystone.REGION}\n"
        "valid_interfaces = internal\n"
        "[volume_image]\n"
        "store_cache_ttl = 0\n"
    )
    servers = {
        "service": launcher.CinderServer(
            base / "service",
            glance_keystone.url,
            keystone=keystone,
            filter_options={"config_file": str(conf)},
        ),
        "forward": launcher.CinderServer(
            base / "forward",
            glance_keystone.url,
            keystone=keystone,
            # no endpoint: Glance is found in the caller's catalog
            filter_options={"forward_token": "true", "store_cache_ttl": "0"},
        ),
    }
    start_all(*servers.values())
    keystone.register_service(
        "block-storage",
        "cinderv3",
        servers["service"].url + "/v3/%(project_id)s",
    )
    yield servers
    for server in servers.values():
        server.stop()


@pytest.mark.parametrize("mode", ["service", "forward"])
def test_filter_validates_with_real_tokens(
    cinders: dict[str, launcher.CinderServer],
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    mode: str,
) -> None:
    api = Api(cinders[mode], keystone, "admin")
    type_id = api.new_type()
    calls = count_requests(glance_keystone, "/v2/info/stores")
    for value, status, words in (
        ("nosuch", 400, "Glance has no store 'nosuch'"),
        ("web", 400, "Glance store 'web' is read-only"),
        ("cheap", 200, ""),
    ):
        resp = api.call(
            "POST",
            f"/types/{type_id}/extra_specs",
            {"extra_specs": {KEY: value}},
        )
        assert resp.status_code == status, resp.text
        assert words in resp.text  # the filter's words, not Cinder's
    resp = api.call("GET", f"/types/{type_id}/extra_specs")
    assert resp.json()["extra_specs"] == {KEY: "cheap"}
    # the filter asked Glance (cache off) for each write, and Cinder for
    # the one it stored
    assert count_requests(glance_keystone, "/v2/info/stores") - calls >= 3


def test_unauthenticated_requests_never_reach_the_filter(
    cinders: dict[str, launcher.CinderServer],
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
) -> None:
    api = Api(cinders["service"], keystone, "admin")
    type_id = api.new_type()
    calls = count_requests(glance_keystone, "/v2/info/stores")
    spoof = {"X-Roles": "admin", "X-Identity-Status": "Confirmed"}
    resp = api.call(
        "POST",
        f"/types/{type_id}/extra_specs",
        {"extra_specs": {KEY: "cheap"}},
        headers=spoof,
        token=False,
    )
    assert resp.status_code == 401
    assert count_requests(glance_keystone, "/v2/info/stores") == calls


def test_spoofed_roles_do_not_make_a_member_admin(
    cinders: dict[str, launcher.CinderServer],
    keystone: launcher.KeystoneServer,
) -> None:
    member = Api(cinders["forward"], keystone, "demo")
    resp = member.call(
        "POST",
        "/types",
        {"volume_type": {"name": "spoofed", "extra_specs": {KEY: "cheap"}}},
        headers={"X-Roles": "admin", "X-Identity-Status": "Confirmed"},
    )
    assert resp.status_code == 403, resp.text


def test_audit_finds_cinder_in_the_catalog(
    cinders: dict[str, launcher.CinderServer],
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
) -> None:
    api = Api(cinders["service"], keystone, "admin")
    type_id = api.new_type()
    resp = api.call(
        "POST", f"/types/{type_id}/extra_specs", {"extra_specs": {KEY: "fast"}}
    )
    assert resp.status_code == 200
    r = cli("audit", "-f", "json", env=keystone.credentials("admin"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["broken"] == []
    assert report["checked"] >= 1
    # a member sees public types only, but may still audit them
    r = cli("audit", "-f", "json", env=keystone.credentials("demo"))
    assert r.returncode == 0, r.stderr


def test_reader_cannot_write_specs_through_the_filter(
    cinders: dict[str, launcher.CinderServer],
    keystone: launcher.KeystoneServer,
) -> None:
    admin = Api(cinders["forward"], keystone, "admin")
    type_id = admin.new_type()
    reader = Api(cinders["forward"], keystone, "demo-reader")
    reader.root = admin.root.replace(
        keystone.project_ids["admin"], keystone.project_ids["demo"]
    )
    resp = reader.call(
        "POST",
        f"/types/{type_id}/extra_specs",
        {"extra_specs": {KEY: "cheap"}},
    )
    assert resp.status_code in (403, 404), resp.text
    assert admin.call("GET", f"/types/{type_id}/extra_specs").json() == {
        "extra_specs": {}
    }
