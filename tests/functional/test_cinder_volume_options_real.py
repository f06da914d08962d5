"""Cinder's own options of the upload path, set away from their
defaults in a real cinder-volume 29: Cinder's decide inside the
service, and a ``[volume_image]`` option wins only where it is set.

The session's stack (``test_cinder_volume_real``) checks the defaults:
qcow2 compressed, ``$state_path/conversion``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import cinderapi, launcher

from .conftest import _start

pytestmark = pytest.mark.functional

MIB = 1 << 20
KEY = "image_service:store_id"


@pytest.fixture(scope="module")
def stack(
    rabbit: launcher.RabbitServer,
    glance_server: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.CinderStack]:
    base = tmp_path_factory.mktemp("cinder-stack-options")
    server = launcher.CinderStack(
        base,
        glance_server.url,
        # a vhost of its own, as every stack on the shared broker
        rabbit.vhost_url("options-stack"),
        ours_driver="volume_image.cinder.driver.StoreAwareDriver",
        ours_wrapped_driver=launcher.FILE_DRIVER,
        with_filter=False,
        default_options={
            "image_compress_on_upload": "false",
            "image_conversion_dir": str(base / "big-fs"),
            "image_introspection_cpu_limit": "45",
            "image_introspection_address_space_limit": "2",
        },
        backend_options={
            # Cinder's manager handles raw/bare uploads of this backend
            # before any driver; any other goes to the driver
            "ours": {"image_upload_use_cinder_backend": "true"},
        },
        # set by the operator: ours wins over Cinder's 45
        sections={"volume_image": {"introspection_cpu_limit": "30"}},
    )
    _start(server)
    yield server
    server.stop()


def test_cinders_options_decide_unless_ours_are_set(
    stack: launcher.CinderStack,
    glance_server: launcher.GlanceServer,
    tmp_path: Path,
) -> None:
    conversion = stack.base / "big-fs"
    log = stack.service_log("cinder-volume").read_text()
    assert (
        f"conversions in {conversion}, qcow2 compressed False, qemu-img "
        "info limits 30 s CPU and 2 GiB" in log
    )
    assert "sets image_upload_use_cinder_backend" in log

    rest = stack.rest()
    vtype = rest.backend_type("ours", {KEY: "cheap"})
    volume = rest.create_volume(1, volume_type=vtype["id"])
    rest.wait_volume(volume["id"])
    path = stack.volume_file(volume["id"])
    with open(path, "r+b") as f:
        f.truncate(32 * MIB)
        f.write(b"volume_image" * (32 * MIB // 12))

    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                seen.update(
                    e.name
                    for e in os.scandir(conversion)
                    if e.name.startswith("volume_image-")
                )
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = stack.cli(
            "upload-to-image", "--disk-format", "qcow2",
            "--container-format", "bare", volume["id"], "vi-options",
        )  # fmt: skip
        image_id = cinderapi.parse_table(out.stdout)["image_id"]
        after = rest.wait_volume_leaves(volume["id"], timeout=120)
    finally:
        done.set()
        watcher.join()
    assert after["status"] == "available"
    image = requests.get(
        f"{glance_server.url}/v2/images/{image_id}", timeout=30
    ).json()
    assert image["status"] == "active", image
    assert image["stores"] == "cheap"
    assert f"uploaded to image {image_id} in store cheap" in (
        stack.service_log("cinder-volume").read_text()
    )
    # image_conversion_dir held the work directory
    assert seen, f"no work directory of ours appeared in {conversion}"
    # image_compress_on_upload = false: as large as qemu-img's plain qcow2
    plain = tmp_path / "plain.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(path),
         str(plain)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert image["size"] >= plain.stat().st_size * 0.9
    rest.delete_volume(volume["id"])
