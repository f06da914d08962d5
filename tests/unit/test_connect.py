"""Where the command lines connect: clouds.yaml through openstacksdk's
loader, OS_* and flags over the cloud, the config file, a token-less
Glance, and the fallback without openstacksdk.  No network: the
connection is built and inspected; requests-mock answers the rest.
"""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import requests_mock

from volume_image import config
from volume_image.cli import main as cli
from volume_image.cli.osc import plugin
from volume_image.clients import connection as _connect

GLANCE = "http://glance.test:9292"
DETAIL = (
    Path(__file__).parent.parent / "data" / "stores-detail-glance33.json"
).read_bytes()
CINDER = "http://cinder.test:8776/v3/p1"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OS_* of the caller; $HOME and the working directory in a
    temporary directory, and clouds.yaml there, empty until
    :func:`write_cloud` (openstacksdk fixes its search path, XDG
    included, when first imported: the functional tests cover it).
    """
    import os

    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clouds.yaml").write_text("clouds: {}\n")
    (tmp_path / "secure.yaml").write_text("clouds: {}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    monkeypatch.setenv("OS_CLIENT_SECURE_FILE", str(tmp_path / "secure.yaml"))
    return tmp_path


def write_cloud(home: Path, **entry: Any) -> None:
    """Cloud ``lab`` (password auth) in the test's clouds.yaml."""
    cloud = {
        "auth": {
            "auth_url": "http://keystone.test/v3",
            "username": "u",
            "password": "from-the-cloud",
            "project_name": "p",
            "user_domain_id": "default",
            "project_domain_id": "default",
        },
        **entry,
    }
    # JSON is YAML
    (home / "clouds.yaml").write_text(json.dumps({"clouds": {"lab": cloud}}))


def connection(*argv: str, config_files: tuple[str, ...] = ()) -> Any:
    """The connection ``volume-image ARGV stores`` would use."""
    full = [*argv, "stores"]
    loader = _connect.cloud_config()
    args = cli.build_parser(full, cloud_config=loader).parse_args(full)
    ctx = cli.Context(
        args,
        config.load(list(config_files)),
        io.StringIO(),
        io.StringIO(),
        argv=full,
        cloud_config=loader,
    )
    return ctx.connection


def test_cloud_tls_settings(home: Path) -> None:
    write_cloud(home, cacert="/etc/ca.pem", cert="/c.pem", key="/k.pem")
    conn = connection("--os-cloud", "lab")
    assert conn.session.verify == "/etc/ca.pem"
    assert conn.session.cert == ("/c.pem", "/k.pem")


def test_insecure_cloud(home: Path) -> None:
    write_cloud(home, insecure=True, cacert="/etc/ca.pem")
    with pytest.warns(Warning, match="ignore the host verification"):
        conn = connection("--os-cloud", "lab")
    assert conn.session.verify is False


def test_insecure_flag_overrides_the_clouds_cacert(home: Path) -> None:
    write_cloud(home, cacert="/etc/ca.pem")
    with pytest.warns(Warning, match="ignore the host verification"):
        conn = connection("--os-cloud", "lab", "--insecure")
    assert conn.session.verify is False


def test_cacert_flag_overrides_the_clouds(home: Path) -> None:
    write_cloud(home, cacert="/etc/ca.pem")
    conn = connection("--os-cloud", "lab", "--os-cacert", "/other.pem")
    assert conn.session.verify == "/other.pem"


def test_secure_yaml_is_merged(home: Path) -> None:
    write_cloud(home, region_name="north")
    (home / "secure.yaml").write_text(
        json.dumps({"clouds": {"lab": {"auth": {"password": "secret"}}}})
    )
    conn = connection("--os-cloud", "lab")
    assert conn.session.auth._password == "secret"
    assert conn.services["image"].region_name == "north"


def test_os_variables_and_flags_merge_over_the_cloud(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cloud(home, regions=["north", "south"], interface="internal")
    monkeypatch.setenv("OS_CLOUD", "lab")
    conn = connection()
    assert conn.session.auth._password == "from-the-cloud"
    assert conn.services["image"].interface == "internal"
    monkeypatch.setenv("OS_PASSWORD", "from-the-env")
    monkeypatch.setenv("OS_INTERFACE", "admin")
    conn = connection("--os-region-name", "south")
    assert conn.session.auth._password == "from-the-env"
    assert conn.services["image"].interface == "admin"
    assert conn.services["block-storage"].region_name == "south"
    conn = connection("--os-password", "flag", "--os-interface", "public")
    assert conn.session.auth._password == "flag"
    assert conn.services["image"].interface == "public"


def test_region_list(home: Path) -> None:
    write_cloud(home, regions=["north", "south"])
    assert (
        connection("--os-cloud", "lab").services["image"].region_name
        == "north"
    )
    conn = connection("--os-cloud", "lab", "--os-region-name", "south")
    assert conn.services["image"].region_name == "south"


def test_endpoint_overrides(home: Path) -> None:
    write_cloud(
        home,
        image_endpoint_override=GLANCE,
        block_storage_endpoint_override=CINDER,
    )
    conn = connection("--os-cloud", "lab")
    assert conn.adapter("image").endpoint_override == GLANCE
    assert conn.block_storage().endpoint_override == CINDER
    assert conn.block_storage("http://x/v3/p").endpoint_override == (
        "http://x/v3/p"
    )
    other = "http://other.test:9292"
    conn = connection("--os-cloud", "lab", "--os-endpoint-override", other)
    assert conn.adapter("image").endpoint_override == other


def test_timeouts(home: Path) -> None:
    write_cloud(home)
    conn = connection("--os-cloud", "lab")
    # openstack's sessions have none; a command must not hang for ever
    assert conn.session.timeout == config.DEFAULT_TIMEOUT
    write_cloud(home, api_timeout=7)
    assert connection("--os-cloud", "lab").session.timeout == 7
    assert (
        connection("--os-cloud", "lab", "--timeout", "9").session.timeout == 9
    )


def test_config_file_wins_without_auth_options(home: Path) -> None:
    """A single cloud in clouds.yaml is openstack's default cloud; but
    with --config-file and no --os-cloud, --os-auth-type or OS_AUTH_URL,
    the config file is used, as before.
    """
    write_cloud(home, image_endpoint_override="http://from-cloud")
    conf = home / "vi.conf"
    conf.write_text(f"[glance]\nendpoint_override = {GLANCE}\n")
    conn = connection("--config-file", str(conf), config_files=(str(conf),))
    assert conn.adapter("image").endpoint_override == GLANCE
    assert conn.session.auth is None


def test_tokenless_glance(home: Path) -> None:
    conn = connection("--os-endpoint-override", GLANCE, "--insecure")
    assert conn.session.auth is None
    assert conn.session.verify is False
    assert conn.adapter("image").endpoint_override == GLANCE


def test_auth_type_none_with_an_endpoint(
    home: Path, rmock: requests_mock.Mocker
) -> None:
    rmock.get(f"{GLANCE}/v2/info/stores/detail", content=DETAIL)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [
            *("--os-auth-type", "none", "--os-endpoint", GLANCE),
            *("validate", "image_service:store_id=web"),
        ],
        out=out,
        err=err,
    )
    assert code == 3, err.getvalue()
    assert "read-only" in err.getvalue()


def test_nothing_to_connect_to_is_a_usage_error(home: Path) -> None:
    err = io.StringIO()
    assert cli.main(["stores"], out=io.StringIO(), err=err) == 2
    assert "no Glance to ask" in err.getvalue()


def test_unknown_cloud_is_a_usage_error(home: Path) -> None:
    write_cloud(home)
    err = io.StringIO()
    assert cli.main(["--os-cloud", "nosuch", "stores"], err=err) == 2
    assert "nosuch" in err.getvalue()


def test_without_openstacksdk(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    rmock: requests_mock.Mocker,
) -> None:
    """Cinder's virtualenv: keystoneauth1's OS_* and --os-* still work,
    and --os-cloud says which extra to install.
    """
    monkeypatch.setitem(sys.modules, "openstack", None)  # import fails
    assert _connect.cloud_config() is None
    write_cloud(home)
    err = io.StringIO()
    code = cli.main(["--os-cloud", "lab", "stores"], err=err)
    assert code == 2
    assert "volume_image[cli]" in err.getvalue()
    rmock.get(f"{GLANCE}/v2/info/stores/detail", content=DETAIL)
    out = io.StringIO()
    monkeypatch.setenv("OS_AUTH_TYPE", "none")
    monkeypatch.setenv("OS_ENDPOINT", GLANCE)
    assert cli.main(["stores", "-f", "json"], out=out, err=err) == 0
    assert len(json.loads(out.getvalue())["stores"]) == 3


def test_plugin_connects_with_openstacks_cloud_region(home: Path) -> None:
    """make_client takes what python-openstackclient loaded: the
    CloudRegion and its session, unchanged.
    """
    region = _connect.cloud_config(isolated=True).get_one(
        auth_type="none",
        auth={"endpoint": GLANCE},
        block_storage_endpoint_override=CINDER,
        interface="internal",
    )
    manager = types.SimpleNamespace(
        sdk_connection=types.SimpleNamespace(config=region)
    )
    conn = plugin.make_client(manager)
    assert conn.session is region.get_session()
    assert conn.adapter("image").endpoint_override == GLANCE
    assert conn.block_storage().endpoint_override == CINDER
    assert conn.services["image"].interface == "internal"


def test_plugin_registers_its_version_option() -> None:
    import argparse

    parser = plugin.build_option_parser(argparse.ArgumentParser())
    args = parser.parse_args(["--os-volume-image-api-version", "1"])
    assert args.os_volume_image_api_version == "1"
    assert plugin.DEFAULT_API_VERSION in plugin.API_VERSIONS


def test_default_cloud_merged_into_another_auth_type(home: Path) -> None:
    """openstacksdk merges a lone cloud into the flags when no cloud is
    named; an auth type that cannot take its options is a usage error,
    not a traceback.
    """
    write_cloud(home)
    err = io.StringIO()
    code = cli.main(
        ["--os-auth-type", "none", "--os-endpoint", GLANCE, "stores"],
        out=io.StringIO(),
        err=err,
    )
    assert code == 2
    assert "default cloud 'lab'" in err.getvalue()


def test_the_library_imports_no_cli_extra() -> None:
    """osc-lib, cliff and openstacksdk are extras: importing the package,
    its command line or the plugin's start-up module loads none of them.
    """
    import subprocess

    code = (
        "import sys, volume_image, volume_image.cli.main, "
        "volume_image.api.hook, volume_image.api.middleware, "
        "volume_image.pipeline.uploader, volume_image.cli.osc.plugin\n"
        "loaded = {'openstack', 'osc_lib', 'cliff', 'openstackclient'}"
        " & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_clouds_yaml_is_looked_for_where_openstacksdk_looks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The search list is openstacksdk's own, /etc/xdg/openstack too."""
    from openstack.config import loader

    for name in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    xdg = [p for p in loader.CONFIG_FILES if "/etc/xdg/openstack/" in p]
    assert xdg, loader.CONFIG_FILES
    site = tmp_path / "etc-xdg-openstack" / "clouds.yaml"
    monkeypatch.setattr(loader, "CONFIG_FILES", [str(site)])
    assert not _connect.clouds_wanted(["stores"])
    site.parent.mkdir()
    site.write_text("clouds: {}\n")
    assert _connect.clouds_wanted(["stores"])
