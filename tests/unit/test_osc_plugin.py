"""The ``openstack volume type store`` commands, run in-process by
python-openstackclient's own shell, with requests-mock as Glance: the
output formats and the exit codes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests_mock
from openstackclient import shell

GLANCE = "http://glance.test:9292"
DATA = Path(__file__).parent.parent / "data"
DETAIL = json.loads((DATA / "stores-detail-glance33.json").read_text())
KEY = "image_service:store_id"


def without(store: str) -> dict[str, Any]:
    return {"stores": [s for s in DETAIL["stores"] if s["id"] != store]}


@pytest.fixture
def openstack(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str, str]]:
    """``openstack --os-auth-type none --os-endpoint GLANCE ARGS``."""
    import os

    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    empty = tmp_path / "clouds.yaml"
    empty.write_text("clouds: {}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(empty))

    def run(*args: str) -> tuple[int, str, str]:
        code = shell.main(
            ["--os-auth-type", "none", "--os-endpoint", GLANCE, *args]
        )
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_validate_exit_codes_and_formats(
    openstack: Callable[..., tuple[int, str, str]],
    rmock: requests_mock.Mocker,
) -> None:
    rmock.get(f"{GLANCE}/v2/info/stores/detail", json=DETAIL)
    cmd = ("volume", "type", "store", "validate")
    code, out, err = openstack(
        *cmd, "--property", f"{KEY}=cheap", "-f", "json"
    )
    assert code == 0, err
    assert json.loads(out)["store_id"] == "cheap"
    code, out, _ = openstack(
        *cmd, "--property", f"{KEY}=chep", "-f", "value", "-c", "suggestion"
    )
    assert (code, out.strip()) == (3, "cheap")
    code, _, err = openstack(
        *cmd, "--property", f"{KEY}=cheap", "--property", f"{KEY}=fast"
    )
    assert code == 1
    assert "given twice" in err


def test_audit_broken_and_disputed(
    openstack: Callable[..., tuple[int, str, str]],
    rmock: requests_mock.Mocker,
    tmp_path: Path,
) -> None:
    listing = tmp_path / "types.json"
    listing.write_text(
        json.dumps(
            {
                "volume_types": [
                    {"id": "1", "name": "a", "extra_specs": {KEY: "cheap"}},
                    {"id": "2", "name": "b", "extra_specs": {KEY: "web"}},
                    {"id": "3", "name": "c", "extra_specs": {}},
                ]
            }
        )
    )
    cmd = ("volume", "type", "store", "audit", "--from-file", str(listing))
    # every answer: b is read-only
    rmock.get(f"{GLANCE}/v2/info/stores/detail", json=DETAIL)
    code, out, err = openstack(*cmd, "-f", "json")
    assert code == 3, err
    assert [(r["Name"], r["Status"]) for r in json.loads(out)] == [
        ("b", "broken")
    ]
    assert "1 of 3 volume types are broken" in err

    # one node lacks "cheap", the next two have it: "a" is disputed; with
    # "b" broken the exit is 3, without it 1 (Glance's fault)
    answers = [{"json": without("cheap")}, {"json": DETAIL}, {"json": DETAIL}]
    rmock.get(f"{GLANCE}/v2/info/stores/detail", answers)
    code, out, err = openstack(
        *cmd, "-f", "value", "-c", "Name", "-c", "Status"
    )
    assert code == 3
    assert out.splitlines() == ["b broken", "a disputed"]
    assert "Glance nodes disagree" in err
    listing.write_text(
        json.dumps(
            {
                "volume_types": [
                    {"id": "1", "name": "a", "extra_specs": {KEY: "cheap"}}
                ]
            }
        )
    )
    rmock.get(f"{GLANCE}/v2/info/stores/detail", answers)
    code, out, err = openstack(
        *cmd, "-f", "value", "-c", "Name", "-c", "Status"
    )
    assert (code, out.splitlines()) == (1, ["a disputed"])

    # all fine: an empty list, exit 0
    listing.write_text(json.dumps({"volume_types": []}))
    rmock.get(f"{GLANCE}/v2/info/stores/detail", json=DETAIL)
    code, out, err = openstack(*cmd, "-f", "json")
    assert (code, json.loads(out)) == (0, [])
