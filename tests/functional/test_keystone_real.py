"""The real token path: Keystone 30, Glance 33 behind keystonemiddleware,
the endpoint from the service catalog; roles, revoked and expired tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import adapter

from harness import launcher
from volume_image import config, errors
from volume_image.clients import glance
from volume_image.pipeline import uploader as upload

from .conftest import count_requests
from .helpers import ThrottledFile, write_clouds
from .test_validate_real import cli

pytestmark = pytest.mark.functional


def ks_client(
    keystone: launcher.KeystoneServer,
    user: str,
    headers: dict[str, str] | None = None,
) -> glance.GlanceClient:
    """A client that finds Glance in the catalog, as a service would."""
    return glance.GlanceClient(
        adapter.Adapter(
            keystone.session(user),
            service_type="image",
            interface="public",
            region_name=keystone.REGION,
            additional_headers=headers or {},
        )
    )


def images_of(keystone: launcher.KeystoneServer, project: str) -> list[Any]:
    owner = keystone.project_ids[project]
    resp = keystone.session("admin").get(
        f"/v2/images?owner={owner}",
        endpoint_filter={"service_type": "image", "interface": "public"},
    )
    return list(resp.json()["images"])


def revoke(keystone: launcher.KeystoneServer, token: str) -> None:
    keystone.session("admin").delete(
        "/auth/tokens",
        headers={"X-Subject-Token": token},
        endpoint_filter={"service_type": "identity"},
    )


@pytest.mark.parametrize(
    ("user", "detailed"),
    [("admin", True), ("demo", False), ("demo-reader", False)],
)
def test_stores_from_the_catalog_per_role(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    user: str,
    detailed: bool,
) -> None:
    """OS_* variables only: no endpoint given, Glance found in the
    catalog; /detail enriches for admins and degrades for the others.
    """
    r = cli("stores", "-f", "json", env=keystone.credentials(user))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["detailed"] is detailed
    assert [s["id"] for s in doc["stores"]] == ["fast", "cheap", "web"]
    if detailed:
        assert doc["stores"][0]["type"] == "file"


def test_os_flags_and_validate(
    keystone: launcher.KeystoneServer, glance_keystone: launcher.GlanceServer
) -> None:
    creds = keystone.credentials("demo-reader")
    flags = [
        f"--os-{k[3:].lower().replace('_', '-')}={v}" for k, v in creds.items()
    ]
    r = cli(*flags, "validate", "image_service:store_id=cheap")
    assert r.returncode == 0, r.stderr
    r = cli(*flags, "validate", "image_service:store_id=web")
    assert r.returncode == 3
    assert "read-only" in r.stderr


def test_member_uploads_to_a_named_and_the_default_store(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    tmp_path: Path,
) -> None:
    volume = tmp_path / "volume.raw"
    volume.write_bytes(os.urandom(3 * 1024 * 1024))
    env = keystone.credentials("demo")
    for spec, store in (
        ("image_service:store_id=cheap", "cheap"),
        (None, "fast"),
    ):
        args = ["upload", str(volume), "--name", f"to-{store}", "-f", "json"]
        if spec:
            args += ["--extra-spec", spec]
        r = cli(*args, env=env)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["store"] == store
        assert result["verified"] is True
        stored = glance_keystone.store_dir(store) / result["image_id"]
        assert stored.read_bytes() == volume.read_bytes()


def test_reader_may_not_upload_and_nothing_is_created(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    tmp_path: Path,
) -> None:
    volume = tmp_path / "volume.raw"
    volume.write_bytes(b"x" * 4096)
    before = images_of(keystone, "demo")
    r = cli(
        "upload",
        str(volume),
        "--name",
        "by-reader",
        "--store-id",
        "cheap",
        env=keystone.credentials("demo-reader"),
    )
    assert r.returncode == 4, r.stderr
    assert "not allowed" in r.stderr
    assert "member role" in r.stderr
    assert "Traceback" not in r.stderr
    assert images_of(keystone, "demo") == before


@pytest.mark.parametrize(
    ("how", "fragment"),
    [("wrong password", "401"), ("garbage token", "40"), ("revoked", "401")],
)
def test_bad_credentials_exit_4_without_traceback(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    how: str,
    fragment: str,
) -> None:
    if how == "wrong password":
        env = dict(keystone.credentials("demo"), OS_PASSWORD="nope")
        args: list[str] = []
    else:
        if how == "revoked":
            token = keystone.session("demo").get_token()
            assert token
            revoke(keystone, token)
        else:
            token = "gAAAAABgarbage"
        env = {}
        args = [
            "--os-auth-type",
            "admin_token",
            "--os-endpoint",
            glance_keystone.url,
            "--os-token",
            token,
        ]
    r = cli(*args, "stores", env=env)
    assert r.returncode == 4, r.stderr
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr


def test_spoofed_roles_change_nothing(
    keystone: launcher.KeystoneServer, glance_keystone: launcher.GlanceServer
) -> None:
    spoof = {
        "X-Roles": "admin,member,reader",
        "X-Identity-Status": "Confirmed",
    }
    catalog = ks_client(keystone, "demo-reader", spoof).get_store_catalog()
    assert catalog.detailed is False  # /detail still refused: 403
    client = ks_client(keystone, "demo-reader", spoof)
    with pytest.raises(errors.GlanceAuthError) as info:
        client.create_image(upload.ImageMeta("spoof").body())
    assert info.value.status_code == 403


def test_token_revoked_before_the_put_reauthenticates_once(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Glance answers the PUT 401; the pipeline authenticates again and
    sends once more, from byte 0.
    """
    client = ks_client(keystone, "demo")
    put = client.upload_image_data
    revoked: list[str] = []

    def revoke_then_put(*args: Any, **kwargs: Any) -> Any:
        if not revoked:
            token = client.adapter.get_token()
            assert token
            revoke(keystone, token)
            revoked.append(token)
        return put(*args, **kwargs)

    monkeypatch.setattr(client, "upload_image_data", revoke_then_put)
    data = os.urandom(2 * 1024 * 1024)
    volume = upload.Source(fileobj=ThrottledFile(data, 1e9), size=len(data))
    puts = count_requests(glance_keystone, "PUT /v2/images/")
    result = upload.Uploader(client, config.Settings()).upload(
        volume, upload.ImageMeta("revoked"), store_id="cheap"
    )
    assert result.attempts == 2
    assert result.verified
    assert count_requests(glance_keystone, "PUT /v2/images/") - puts == 2
    assert client.adapter.get_token() != revoked[0]
    stored = glance_keystone.store_dir("cheap") / result.image_id
    assert stored.read_bytes() == data


@pytest.fixture(scope="module")
def short_tokens(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[launcher.KeystoneServer, launcher.GlanceServer]]:
    """A Keystone whose tokens live 20 s, and its own Glance."""
    ks = launcher.KeystoneServer(
        tmp_path_factory.mktemp("keystone-short"), token_expiration=20
    )
    ks.start()
    gl = launcher.GlanceServer(
        tmp_path_factory.mktemp("glance-short"),
        processes=1,
        keystone=ks,
        token_cache_time=-1,
    )
    try:
        gl.start()
        ks.register_service("image", "glance", gl.url)
        yield ks, gl
    finally:
        gl.stop()
        ks.stop()


def test_upload_that_outlives_its_token(
    short_tokens: tuple[launcher.KeystoneServer, launcher.GlanceServer],
) -> None:
    """Measured on Glance 33: authtoken checks the token once, when the
    request starts, so a PUT that outlives its token completes; the
    verification after it gets a fresh token.  One PUT, no re-send.
    """
    ks, gl = short_tokens
    client = ks_client(ks, "demo")
    data = os.urandom(4 * 1024 * 1024)
    # about 24 s: longer than the 20 s token the PUT starts with
    volume = upload.Source(
        fileobj=ThrottledFile(data, len(data) / 24), size=len(data)
    )
    result = upload.Uploader(client, config.Settings()).upload(
        volume, upload.ImageMeta("long"), store_id="cheap"
    )
    assert result.seconds > 21
    assert result.attempts == 1
    assert result.verified
    assert count_requests(gl, "PUT /v2/images/") == 1
    assert (gl.store_dir("cheap") / result.image_id).read_bytes() == data


def test_clouds_yaml(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    tmp_path: Path,
) -> None:
    write_clouds(
        keystone,
        tmp_path,
        extra={user: {"auth_type": "password"} for user in ("admin", "demo")},
    )
    clouds_yaml = tmp_path / "clouds.yaml"
    secure_yaml = tmp_path / "secure.yaml"
    env = {
        "OS_CLIENT_CONFIG_FILE": str(clouds_yaml),
        "OS_CLIENT_SECURE_FILE": str(secure_yaml),
    }
    for cloud, detailed in (("admin", True), ("demo", False)):
        r = cli("stores", "-f", "json", env=dict(env, OS_CLOUD=cloud))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["detailed"] is detailed
    r = cli("--os-cloud", "nosuch", "stores", env=env)
    assert r.returncode == 2
    assert "nosuch" in r.stderr and "not found" in r.stderr
