"""Store discovery and validation against a real Glance 33."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from harness import launcher
from volume_image import errors
from volume_image.core import validation
from volume_image.pipeline import records

from .conftest import count_requests, make_client

pytestmark = pytest.mark.functional


def cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "volume_image.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def noauth(url: str) -> list[str]:
    return ["--os-auth-type", "none", "--os-endpoint", url]


def test_stores_table(glance_server: launcher.GlanceServer) -> None:
    r = cli(*noauth(glance_server.url), "stores")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "default",
        "read-only",
        "description",
        "type",
        "weight",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["fast"][1:3] == ["yes", "no"]
    assert rows["cheap"][1:3] == ["no", "no"]
    assert rows["web"][1:3] == ["no", "yes"]
    assert rows["web"][-2:] == ["http", "0"]


def test_stores_json_has_real_booleans(
    glance_server: launcher.GlanceServer,
) -> None:
    r = cli(
        "--os-endpoint-override", glance_server.url, "stores", "-f", "json"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    by_id = {s["id"]: s for s in doc["stores"]}
    assert by_id["fast"]["default"] is True
    assert by_id["web"]["read_only"] is True
    assert by_id["cheap"]["read_only"] is False
    assert by_id["cheap"]["type"] == "file"
    assert doc["detailed"] is True
    # reserved stores are never listed by Glance
    assert not [i for i in by_id if i.startswith("os_glance_")]


def test_env_variables_work(glance_server: launcher.GlanceServer) -> None:
    r = cli(
        "stores",
        "-f",
        "json",
        env={"OS_AUTH_TYPE": "none", "OS_ENDPOINT": glance_server.url},
    )
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["stores"]) == 3


@pytest.mark.parametrize("auth", ["", "auth_type = none\nendpoint = {url}\n"])
def test_config_file(
    glance_server: launcher.GlanceServer, tmp_path: Path, auth: str
) -> None:
    conf = tmp_path / "volume_image.conf"
    body = auth.format(url=glance_server.url) or (
        f"endpoint_override = {glance_server.url}\n"
    )
    conf.write_text("[glance]\n" + body)
    r = cli(
        "--config-file", str(conf), "validate", "image_service:store_id=cheap"
    )
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


@pytest.mark.parametrize(
    ("spec", "code", "fragment"),
    [
        ("image_service:store_id=cheap", 0, "valid"),
        ("image_service:store_id=fast", 0, "valid"),
        ("image_service:store_id=nosuch", 3, "Glance has no store 'nosuch'"),
        ("image_service:store_id=Cheap", 3, "Did you mean 'cheap'?"),
        ("image_service:store_id=web", 3, "read-only"),
        ("image_service:store_id=os_glance_staging_store", 3, "reserved"),
        ("image_service:store_id=os_glance_tasks_store", 3, "reserved"),
        ("image_service:store_id= cheap", 3, "whitespace"),
        ("Image_Service:Store_Id=cheap", 3, "lower-case"),
        ("IMAGE_SERVICE:store_id=nosuch", 3, "lower-case"),
        ("image_service:store_id=", 3, "is empty"),
        (
            "image_service:storeid=cheap",
            3,
            "Did you mean 'image_service:store_id'",
        ),
    ],
)
def test_validate_rules(
    glance_server: launcher.GlanceServer, spec: str, code: int, fragment: str
) -> None:
    r = cli(
        *noauth(glance_server.url), "validate", spec, "volume_backend_name=lvm"
    )
    assert r.returncode == code, r.stdout + r.stderr
    assert fragment in (r.stdout + r.stderr)
    if code:
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_validate_json(glance_server: launcher.GlanceServer) -> None:
    r = cli(
        *noauth(glance_server.url),
        "validate",
        "-f",
        "json",
        "image_service:store_id=chep",
        "volume_backend_name=lvm",
    )
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["valid"] is False
    assert (doc["error"], doc["suggestion"]) == ("UnknownStore", "cheap")
    r = cli(
        *noauth(glance_server.url),
        "validate",
        "-f",
        "json",
        "image_service:store_id=cheap",
        "volume_backend_name=lvm",
    )
    doc = json.loads(r.stdout)
    assert doc["valid"] is True
    assert doc["backend_specs"] == {"volume_backend_name": "lvm"}


def test_usage_errors_exit_2(glance_server: launcher.GlanceServer) -> None:
    assert (
        cli(*noauth(glance_server.url), "validate", "novalue").returncode == 2
    )
    assert cli("stores").returncode == 2
    assert cli("bogus").returncode == 2


def test_glance_down(closed_url: str) -> None:
    r = cli(*noauth(closed_url), "validate", "image_service:store_id=cheap")
    assert r.returncode == 4
    assert "Glance is unavailable" in r.stderr and closed_url in r.stderr
    assert "connection refused" in r.stderr
    assert "Traceback" not in r.stderr
    # --debug shows the traceback
    r = cli("--debug", *noauth(closed_url), "stores")
    assert r.returncode == 4 and "Traceback" in r.stderr


def test_specs_without_store_validate_with_glance_down(
    closed_url: str,
) -> None:
    r = cli(*noauth(closed_url), "validate", "volume_backend_name=lvm")
    assert r.returncode == 0, r.stderr


def test_no_multistore(glance_single: launcher.GlanceServer) -> None:
    # no store can be named there: a spec problem (3), not a Glance fault
    r = cli(*noauth(glance_single.url), "stores")
    assert r.returncode == 3
    assert "without multi-store" in r.stderr
    r = cli(
        *noauth(glance_single.url), "validate", "image_service:store_id=file"
    )
    assert r.returncode == 3
    assert (
        "cannot be honoured" in r.stderr and "unknown" not in r.stderr.lower()
    )
    r = cli(*noauth(glance_single.url), "validate", "volume_backend_name=x")
    assert r.returncode == 0


def test_member_falls_back_to_basic_list(
    glance_server: launcher.GlanceServer,
) -> None:
    member = make_client(
        glance_server.url, {"X-Roles": "member,reader", "X-Project-Id": "p1"}
    )
    cat = member.get_store_catalog()
    assert not cat.detailed
    assert cat.get("cheap") is not None and cat.get("cheap").type is None  # type: ignore[union-attr]
    admin = make_client(glance_server.url).get_store_catalog()
    assert admin.detailed and admin.get("cheap").type == "file"  # type: ignore[union-attr]


def test_warm_cache_makes_no_request(
    glance_server: launcher.GlanceServer,
) -> None:
    validator = validation.Validator(
        validation.StoreCatalogCache(
            make_client(glance_server.url).get_store_catalog, ttl=300
        )
    )
    validator.validate_extra_specs({"image_service:store_id": "cheap"})
    # uWSGI writes a request's log line after its answer: let it land
    time.sleep(0.5)
    before = count_requests(glance_server, "/v2/info/stores")
    for _ in range(10):
        validator.validate_extra_specs({"image_service:store_id": "fast"})
        with pytest.raises(errors.ReadOnlyStore):
            validator.check_store("web")
    assert count_requests(glance_server, "/v2/info/stores") == before


def test_upload_cli(
    glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    vol = tmp_path / "v.raw"
    vol.write_bytes(os.urandom(3 * 1024 * 1024))
    r = cli(
        *noauth(glance_server.url),
        "upload",
        str(vol),
        "--name",
        "cli-up",
        "--extra-spec",
        "image_service:store_id=cheap",
        "--progress",
        "--format",
        "json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["store"] == "cheap" and doc["verified"] is True
    assert doc["size"] == 3 * 1024 * 1024
    assert "100.0%" in r.stderr and "MB/s" in r.stderr  # the progress bar
    r = cli(
        *noauth(glance_server.url), "upload", str(vol), "--name", "cli-up2"
    )
    assert r.returncode == 0, r.stderr
    assert "to store fast" in r.stdout and "MB/s" in r.stdout
    assert "%" not in r.stderr  # no bar when stderr is not a terminal


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["--store-id", "web"], 3, "read-only"),
        (["--disk-format", "iso"], 5, "cannot convert to disk_format 'iso'"),
        (["--name", "x2"], 2, "expected one argument"),
    ],
)
def test_upload_cli_failures(
    glance_server: launcher.GlanceServer,
    tmp_path: Path,
    extra: list[str],
    code: int,
    fragment: str,
) -> None:
    vol = tmp_path / "v.raw"
    vol.write_bytes(b"\0" * 1024 * 1024)
    args = ["upload", str(vol), "--name", "cli-bad", *extra]
    if code == 2:
        args = ["upload", str(vol), "--name"]
    r = cli(*noauth(glance_server.url), *args)
    assert r.returncode == code, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr
    r = cli(
        *noauth(glance_server.url),
        "upload",
        str(tmp_path / "missing"),
        "--name",
        "m",
    )
    assert r.returncode == 5 and "cannot read volume" in r.stderr


def test_sweep_finds_and_deletes_only_our_leftovers(
    glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    """Only an image whose upload record on this host is unlocked (its
    process is gone) is found and, with --delete, removed; one whose
    record is locked (a live upload), and tagged ones with no record
    (owner-set, or copied by Cinder from another image), never are.
    """
    gone = subprocess.Popen(["true"])
    gone.wait()
    here = socket.gethostname()
    env = {"TMPDIR": str(tmp_path)}  # conversion_dir, so the records

    def create(props: dict[str, str]) -> str:
        image_id = str(uuid.uuid4())
        body = {"id": image_id, "name": "left", "disk_format": "raw",
                "container_format": "bare", **props}  # fmt: skip
        if props:
            body["volume_image_upload"] = image_id
        resp = requests.post(f"{glance_server.url}/v2/images", json=body,
                             timeout=30)  # fmt: skip
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    tags = {"volume_image_host": here, "volume_image_pid": str(gone.pid)}
    ours, running, copied = create(tags), create(tags), create(tags)
    theirs = create({})
    records.hold(str(tmp_path), ours)
    records.release(ours)
    records.hold(str(tmp_path), running)
    try:
        r = cli(*noauth(glance_server.url), "sweep", "--older-than", "0",
                "--format", "json", env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        listed = {item["image_id"] for item in json.loads(r.stdout)}
        assert listed == {ours}
        r = cli(*noauth(glance_server.url), "sweep", "--older-than", "1h",
                env=env)  # fmt: skip
        assert ours not in r.stdout  # too young
        r = cli(*noauth(glance_server.url), "sweep", "--older-than", "0s",
                "--delete", env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert ours in r.stdout and "deleted" in r.stdout
    finally:
        records.drop(running)
    status = requests.get(f"{glance_server.url}/v2/images/{ours}", timeout=30)
    assert status.status_code == 404
    for keep in (running, copied, theirs):
        assert (
            requests.get(
                f"{glance_server.url}/v2/images/{keep}", timeout=30
            ).status_code
            == 200
        )
        requests.delete(f"{glance_server.url}/v2/images/{keep}", timeout=30)
    bad = cli(*noauth(glance_server.url), "sweep", "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than" in bad.stderr
