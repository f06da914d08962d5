"""cinder-volume on oslo.service's native threading backend
(``OS_CINDER_DISABLE_EVENTLET_PATCHING=true``, Cinder 2025.2 and later),
the mode OpenStack is moving to: the same uploads as under eventlet, and
what "a stall" means there, the latency of another RPC call (a volume
create on the same backend) while an upload runs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from harness import cinderapi, launcher

from .conftest import _start

pytestmark = pytest.mark.functional

MIB = 1 << 20
KEY = "image_service:store_id"
PATTERN = hashlib.sha256(b"threading").digest() * (MIB // 32)


@pytest.fixture(scope="module")
def stack(
    rabbit: launcher.RabbitServer,
    glance_server: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.CinderStack]:
    server = launcher.CinderStack(
        tmp_path_factory.mktemp("cinder-stack-threading"),
        glance_server.url,
        rabbit.vhost_url("threading-stack"),
        ours_driver="volume_image.cinder.driver.StoreAwareDriver",
        ours_wrapped_driver=launcher.FILE_DRIVER,
        with_filter=False,
        environ={"OS_CINDER_DISABLE_EVENTLET_PATCHING": "true"},
    )
    _start(server)
    yield server
    server.stop()


def _volume(
    stack: launcher.CinderStack, rest: cinderapi.CinderRest, mib: int
) -> tuple[str, str]:
    vtype = rest.backend_type("ours", {KEY: "cheap"})
    made = rest.create_volume(1, volume_type=vtype["id"])
    rest.wait_volume(made["id"])
    md5 = hashlib.md5()  # noqa: S324 - Glance's checksum is an md5
    with open(stack.volume_file(made["id"]), "r+b") as f:
        f.truncate(mib * MIB)
        for _ in range(mib):
            f.write(PATTERN)
            md5.update(PATTERN)
    return made["id"], md5.hexdigest()


def _image(glance: launcher.GlanceServer, image_id: str) -> dict[str, str]:
    resp = requests.get(f"{glance.url}/v2/images/{image_id}", timeout=30)
    resp.raise_for_status()
    return dict(resp.json())


def test_the_service_runs_without_eventlet(
    stack: launcher.CinderStack,
) -> None:
    # oslo.service says so on the service's stdout
    stdout = stack.service_log("cinder-volume").with_suffix(".stdout")
    assert "starting with native threading" in stdout.read_text()
    log = stack.service_log("cinder-volume").read_text()
    assert "go through volume_image" in log


@pytest.mark.parametrize("disk_format", ["raw", "qcow2"])
def test_uploads_land_verified(
    stack: launcher.CinderStack,
    glance_server: launcher.GlanceServer,
    disk_format: str,
) -> None:
    rest = stack.rest()
    volume_id, md5 = _volume(stack, rest, 32)
    image_id = rest.upload_to_image(
        volume_id, f"threading-{disk_format}", disk_format=disk_format
    )
    after = rest.wait_volume_leaves(volume_id, "uploading", timeout=180)
    assert after["status"] == "available"
    image = _image(glance_server, image_id)
    assert (image["status"], image["stores"]) == ("active", "cheap")
    if disk_format == "raw":
        assert image["checksum"] == md5
    log = stack.service_log("cinder-volume").read_text()
    assert f"uploaded to image {image_id} in store cheap" in log


def test_other_calls_are_served_during_an_upload(
    stack: launcher.CinderStack, glance_server: launcher.GlanceServer
) -> None:
    """A 1 GiB upload runs; a volume created on the same backend
    meanwhile is served in seconds, not after the upload.
    """
    rest = stack.rest()
    volume_id, md5 = _volume(stack, rest, 1024)
    t0 = time.monotonic()
    image_id = rest.upload_to_image(volume_id, "threading-big")
    done = threading.Event()
    side: dict[str, float] = {}

    def create_during() -> None:
        vtype = rest.backend_type("ours", {KEY: "cheap"})
        start = time.monotonic()
        made = rest.create_volume(1, volume_type=vtype["id"])
        rest.wait_volume(made["id"], interval=0.05)
        side["seconds"] = time.monotonic() - start
        side["during"] = float(not done.is_set())
        rest.delete_volume(made["id"])

    worker = threading.Thread(target=create_during)
    worker.start()
    after = rest.wait_volume_leaves(volume_id, "uploading", timeout=300)
    done.set()
    upload_s = time.monotonic() - t0
    worker.join()
    assert after["status"] == "available"
    assert _image(glance_server, image_id)["checksum"] == md5
    # served while the upload ran, and fast: no thread is held by it
    assert side["during"] == 1.0, (side, upload_s)
    assert side["seconds"] < 5.0, (side, upload_s)
