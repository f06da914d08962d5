"""Both command lines through their real entry points, against the real
Keystone 30 and Glance 33: ``openstack volume type store ...`` from the
installed python-openstackclient (the plugin), and ``volume-image``.

Authentication comes from a clouds.yaml in a temporary
``$XDG_CONFIG_HOME`` (passwords in secure.yaml), from ``OS_*``, and from
flags that override the cloud, as operators use ``openstack``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import launcher

from .helpers import write_clouds
from .test_api_filter_real import start_all

pytestmark = pytest.mark.functional

KEY = "image_service:store_id"
BIN = Path(sys.executable).parent


def run(
    program: str, *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``program`` (a console script of the project's venv) with a clean
    environment: no OS_* of the caller, $HOME and $XDG_CONFIG_HOME in
    ``home`` (so no user's clouds.yaml), and ``home`` as the working
    directory (openstacksdk also reads ./clouds.yaml).
    """
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OS_", "XDG_"))
    }
    full_env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / program), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=home,
        timeout=180,
    )


def openstack(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run("openstack", *args, home=home, env=env)


def volume_image(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run("volume-image", *args, home=home, env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A $HOME whose ~/.config/openstack/clouds.yaml has the test users."""
    return tmp_path


@pytest.fixture
def clouds(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    home: Path,
) -> Path:
    write_clouds(keystone, home / ".config" / "openstack")
    return home


# --- openstack volume type store validate -----------------------------


def test_openstack_validate_with_a_cloud(clouds: Path) -> None:
    env = {"OS_CLOUD": "demo-reader"}
    r = openstack(
        *("volume", "type", "store", "validate"),
        *("--property", f"{KEY}=cheap"),
        *("--property", "volume_backend_name=lvm"),
        *("-f", "json"),
        home=clouds,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["valid"] is True
    assert doc["store_id"] == "cheap"
    assert doc["backend_specs"] == {"volume_backend_name": "lvm"}

    # a script's view: one value, and exit 3 for an invalid spec
    r = openstack(
        *("volume", "type", "store", "validate"),
        *("--property", f"{KEY}=web"),
        *("-f", "value", "-c", "error"),
        home=clouds,
        env=env,
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == "ReadOnlyStore"

    r = openstack(
        *("--os-cloud", "demo-reader"),
        *("volume", "type", "store", "validate"),
        *("--property", f"{KEY}=chep", "-f", "yaml"),
        home=clouds,
    )
    assert r.returncode == 3, r.stderr
    assert "suggestion: cheap" in r.stdout
    assert "error: UnknownStore" in r.stdout


def test_openstack_flags_and_env_override_the_cloud(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    home: Path,
) -> None:
    """The cloud asks for an interface that has no Glance endpoint and has
    a wrong password; --os-interface and OS_PASSWORD win over it.
    """
    write_clouds(
        keystone,
        home / ".config" / "openstack",
        extra={"demo": {"interface": "admin"}},
    )
    args = [
        *("--os-cloud", "demo", "volume", "type", "store", "validate"),
        *("--property", f"{KEY}=cheap", "-f", "value", "-c", "valid"),
    ]
    r = openstack(*args, home=home)
    assert r.returncode == 1
    assert "no Glance endpoint" in r.stderr, r.stderr
    r = openstack("--os-interface", "public", *args, home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
    r = openstack(
        "--os-interface",
        "public",
        *args,
        home=home,
        env={"OS_PASSWORD": "wrong"},
    )
    assert r.returncode == 1
    assert "401" in r.stderr, r.stderr


def test_openstack_with_os_variables_only(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    home: Path,
) -> None:
    r = openstack(
        *("volume", "type", "store", "validate"),
        *("--property", f"{KEY}=os_glance_staging_store"),
        *("-f", "json"),
        home=home,
        env=keystone.credentials("demo"),
    )
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["error"] == "ReservedStore"


def test_openstack_glance_down_is_an_error(
    closed_url: str, home: Path
) -> None:
    r = openstack(
        *("--os-auth-type", "none", "--os-endpoint", closed_url),
        *("volume", "type", "store", "validate"),
        *("--property", f"{KEY}=cheap"),
        home=home,
    )
    assert r.returncode == 1
    assert "Glance is unavailable" in r.stderr
    assert "connection refused" in r.stderr
    assert "Traceback" not in r.stderr


def test_openstack_help(home: Path) -> None:
    r = openstack("help", "volume", "type", "store", "audit", home=home)
    assert r.returncode == 0, r.stderr
    assert "--from-file" in r.stdout and "volume_image plugin" in r.stdout
    r = openstack("command", "list", "--group", "volume_image", home=home)
    assert r.returncode == 0, r.stderr
    assert "volume type store validate" in r.stdout
    assert "volume type store audit" in r.stdout


# --- openstack volume type store audit --------------------------------


class Types:
    """Volume-type calls to a keystone cinder-api, as admin."""

    def __init__(
        self, server: launcher.CinderServer, keystone: launcher.KeystoneServer
    ) -> None:
        self.token = keystone.session("admin").get_token()
        self.root = f"{server.url}/v3/{keystone.project_ids['admin']}"

    def create(self, specs: dict[str, str]) -> str:
        body = {"name": f"osc-{uuid.uuid4().hex[:10]}", "extra_specs": specs}
        resp = requests.post(
            f"{self.root}/types",
            json={"volume_type": body},
            headers={"X-Auth-Token": str(self.token)},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["volume_type"]["id"])


@pytest.fixture(scope="module")
def cinder(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.CinderServer]:
    """A keystone cinder-api 29 without our filter (so that types can
    name stores Glance refuses, as types made before a store was removed
    do), in the catalog as block-storage.
    """
    server = launcher.CinderServer(
        tmp_path_factory.mktemp("cinder-osc"),
        glance_keystone.url,
        keystone=keystone,
        with_filter=False,
    )
    start_all(server)
    keystone.register_service(
        "block-storage", "cinderv3", server.url + "/v3/%(project_id)s"
    )
    yield server
    server.stop()


def test_openstack_audit_from_the_catalog(
    cinder: launcher.CinderServer,
    keystone: launcher.KeystoneServer,
    clouds: Path,
) -> None:
    types = Types(cinder, keystone)
    gone = types.create({KEY: "nosuch"})
    read_only = types.create({KEY: "web"})
    good = types.create({KEY: "cheap", "volume_backend_name": "lvm"})
    r = openstack(
        *("--os-cloud", "admin", "volume", "type", "store", "audit"),
        *("-f", "json"),
        home=clouds,
    )
    assert r.returncode == 3, r.stderr
    rows = {row["ID"]: row for row in json.loads(r.stdout)}
    assert good not in rows
    assert rows[gone]["Problem"] == "UnknownStore"
    assert rows[gone]["Status"] == "broken"
    assert rows[read_only]["Problem"] == "ReadOnlyStore"
    assert "volume types are broken" in r.stderr

    r = openstack(
        *("--os-cloud", "admin", "volume", "type", "store", "audit"),
        *("-f", "value", "-c", "ID", "-c", "Problem"),
        home=clouds,
    )
    assert r.returncode == 3, r.stderr
    assert f"{read_only} ReadOnlyStore" in r.stdout.splitlines()

    # the same API named by hand; --long adds the message
    project = keystone.project_ids["admin"]
    r = openstack(
        *("--os-cloud", "admin", "volume", "type", "store", "audit"),
        *("--block-storage-endpoint", f"{cinder.url}/v3/{project}"),
        *("--long", "-f", "csv"),
        home=clouds,
    )
    assert r.returncode == 3, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header.split(",")[-1] == '"Message"'
    assert any(gone in line and "has no store" in line for line in lines)
    # a type's project id missing from the URL: cinder-api answers 404
    r = openstack(
        *("--os-cloud", "admin", "volume", "type", "store", "audit"),
        *("--block-storage-endpoint", f"{cinder.url}/v3/nosuch"),
        home=clouds,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr


def test_openstack_audit_from_a_file(clouds: Path, tmp_path: Path) -> None:
    listing = tmp_path / "types.json"
    listing.write_text(
        json.dumps(
            [
                {"ID": "a1", "Name": "gold", "Properties": {KEY: "fast"}},
                {"ID": "a2", "Name": "tin", "Properties": {KEY: "Fast"}},
            ]
        )
    )
    r = openstack(
        *("--os-cloud", "demo", "volume", "type", "store", "audit"),
        *("--from-file", str(listing), "-f", "json", "--long"),
        home=clouds,
    )
    assert r.returncode == 3, r.stderr
    (row,) = json.loads(r.stdout)
    assert (row["Name"], row["Problem"], row["Suggestion"]) == (
        "tin",
        "UnknownStore",
        "fast",
    )
    assert "Did you mean 'fast'" in row["Message"]
    listing.write_text(json.dumps([{"ID": "a1", "Name": "gold"}]))
    r = openstack(
        *("--os-cloud", "demo", "volume", "type", "store", "audit"),
        *("--from-file", str(listing)),
        home=clouds,
    )
    assert r.returncode == 1
    assert "use --long" in r.stderr


# --- volume-image, the host tool, on the same loader -------------------


def test_volume_image_cloud_from_xdg_clouds_yml(
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    home: Path,
) -> None:
    """``$XDG_CONFIG_HOME/openstack/clouds.yml`` (the .yml spelling), the
    password from OS_PASSWORD merged into the cloud, flags over the cloud.
    """
    write_clouds(
        keystone,
        home / ".config" / "openstack",
        name="clouds.yml",
        extra={"demo": {"interface": "admin"}},
    )
    (home / ".config" / "openstack" / "secure.yaml").unlink()
    password = keystone.USERS["demo"][0]
    env = {"OS_CLOUD": "demo", "OS_PASSWORD": password}
    r = volume_image("stores", "-f", "json", home=home, env=env)
    # the cloud's interface has no Glance endpoint: a service error
    assert r.returncode == 4
    assert "no Glance endpoint" in r.stderr
    r = volume_image(
        "--os-interface", "public", "stores", "-f", "json",
        home=home, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["detailed"] is False  # a member: /detail is refused
    assert [s["id"] for s in doc["stores"]] == ["fast", "cheap", "web"]
    r = volume_image(
        *("--os-interface", "public", "--os-password", "wrong"),
        *("validate", f"{KEY}=cheap"),
        home=home,
        env=env,
    )
    assert r.returncode == 4
    assert "401" in r.stderr


def test_volume_image_upload_with_a_cloud(
    clouds: Path,
    glance_keystone: launcher.GlanceServer,
    tmp_path: Path,
) -> None:
    volume = tmp_path / "volume.raw"
    volume.write_bytes(os.urandom(1024 * 1024))
    r = volume_image(
        *("--os-cloud", "demo", "upload", str(volume), "--name", "cloud"),
        *("--store-id", "cheap", "-f", "json"),
        home=clouds,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["store"] == "cheap" and result["verified"] is True
    stored = glance_keystone.store_dir("cheap") / result["image_id"]
    assert stored.read_bytes() == volume.read_bytes()


def test_volume_image_audit_with_a_cloud(
    cinder: launcher.CinderServer,
    keystone: launcher.KeystoneServer,
    clouds: Path,
) -> None:
    broken = Types(cinder, keystone).create({KEY: "nosuch"})
    r = volume_image("--os-cloud", "admin", "audit", "-f", "json", home=clouds)
    assert r.returncode == 3, r.stderr
    assert broken in {f["type_id"] for f in json.loads(r.stdout)["broken"]}


def test_volume_image_unknown_cloud(clouds: Path) -> None:
    r = volume_image("--os-cloud", "nosuch", "stores", home=clouds)
    assert r.returncode == 2
    assert "nosuch" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr
