"""clouds.yaml reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from volume_image import clouds


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_reads_merges_secure_and_maps_cacert(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "OS_CLIENT_CONFIG_FILE": str(
            write(
                tmp_path / "c.yaml",
                "clouds:\n  lab:\n    auth:\n      auth_url: http://k/v3\n"
                "      username: u\n    region_name: R1\n"
                "    cacert: /ca.pem\n",
            )
        ),
        "OS_CLIENT_SECURE_FILE": str(
            write(
                tmp_path / "s.yaml",
                "clouds:\n  lab:\n    auth:\n      password: p\n",
            )
        ),
    }
    cloud = clouds.load_cloud("lab", env)
    assert cloud.auth_type == "password"
    assert cloud.auth == {
        "auth_url": "http://k/v3",
        "username": "u",
        "password": "p",
    }
    assert cloud.region_name == "R1"
    assert cloud.verify == "/ca.pem"


def test_config_dir_under_home(tmp_path: Path) -> None:
    cfg = tmp_path / ".config" / "openstack"
    cfg.mkdir(parents=True)
    write(cfg / "clouds.yaml", "clouds:\n  a: {auth_type: none}\n")
    cloud = clouds.load_cloud("a", {"HOME": str(tmp_path)})
    assert cloud.auth_type == "none"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clouds:\n  other: {}\n", "has no cloud 'lab'; it has: other"),
        ("just a string\n", "no 'clouds:'"),
        ("clouds: [1\n", "cannot read"),
        ("clouds:\n  lab: 5\n", "not a mapping"),
    ],
)
def test_errors(tmp_path: Path, text: str, message: str) -> None:
    env = {
        "HOME": str(tmp_path),
        "OS_CLIENT_CONFIG_FILE": str(write(tmp_path / "c.yaml", text)),
    }
    with pytest.raises(clouds.CloudError, match=message):
        clouds.load_cloud("lab", env)


def test_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(clouds.CloudError, match=r"no clouds\.yaml"):
        clouds.load_cloud("lab", {"HOME": str(tmp_path)})
