"""volume_image against the production-shaped Glance: two nodes of four
workers on MariaDB behind haproxy (the ``glance_ha`` fixture), with node
crashes, graceful stops and nodes that disagree about their stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import launcher
from volume_image import config, errors
from volume_image.pipeline import uploader as upload

from .conftest import make_client

pytestmark = pytest.mark.functional

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 MiB of random data: long enough to hit a node mid-upload."""
    path = tmp_path_factory.mktemp("ha") / "big.raw"
    with open(path, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(MiB))
    return path


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def uploader(url: str, **settings: object) -> upload.Uploader:
    return upload.Uploader(
        make_client(url),
        config.Settings(upload_retry_delay=0.2, **settings),  # type: ignore[arg-type]
    )


def holder(cluster: launcher.GlanceCluster) -> str:
    """The node haproxy has the one open upload connection with."""
    for _ in range(100):
        busy = [
            name
            for name, row in cluster.proxy.stats().items()
            if int(row.get("scur") or 0) > 0
        ]
        if len(busy) == 1:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no single node holds the upload")


@pytest.fixture
def cluster(
    glance_ha: launcher.GlanceCluster,
) -> Iterator[launcher.GlanceCluster]:
    """The pair; afterwards every node runs again, with every store."""
    yield glance_ha
    while STOPPING:
        STOPPING.pop().join()
    for node in glance_ha.nodes:
        if node.without:
            node.stop()
            node.without = []
        if node.pid is None:
            node.start()
    glance_ha.proxy.wait_states({n: "UP" for n in glance_ha.names}, 60)


#: graceful stops still running; the cluster fixture joins them
STOPPING: list[threading.Thread] = []


def kill_holder_at(
    cluster: launcher.GlanceCluster, at: int, graceful: bool = False
) -> tuple[upload.ProgressCallback, list[str]]:
    """A progress callback that, once ``at`` bytes are sent, kills (or
    stops gracefully, in another thread) the node holding the upload.
    """
    victims: list[str] = []

    def progress(done: int, total: int) -> None:
        if done < at or victims:
            return
        name = holder(cluster)
        victims.append(name)
        node = cluster.node(name)
        if graceful:
            stopping = threading.Thread(target=node.stop)
            stopping.start()
            STOPPING.append(stopping)
        else:
            node.kill()

    return progress, victims


def test_node_killed_under_our_upload_fails_over_to_a_new_image(
    cluster: launcher.GlanceCluster, big: Path
) -> None:
    progress, victims = kill_holder_at(cluster, 64 * MiB)
    result = uploader(cluster.url).upload(
        big, upload.ImageMeta("ha-kill"), store_id="cheap", progress=progress
    )
    assert victims
    assert result.verified
    assert result.attempts >= 2 and result.images == 2
    client = make_client(cluster.url)
    image = client.get_image(result.image_id)
    assert image["status"] == "active" and image["stores"] == "cheap"
    assert image["checksum"] == md5_of(big)
    # the stuck image was deleted, nothing of ours is left non-active
    left = [
        i
        for i in client.list_images(name="ha-kill")
        if i["status"] != "active"
    ]
    assert left == []


def test_node_killed_under_a_callers_image_fails_cleanly(
    cluster: launcher.GlanceCluster, big: Path
) -> None:
    client = make_client(cluster.url)
    image_id = client.create_image(
        {"name": "ha-caller", "disk_format": "raw", "container_format": "bare"}
    )["id"]
    progress, victims = kill_holder_at(cluster, 64 * MiB)
    with pytest.raises(errors.VolumeImageError) as info:
        uploader(cluster.url).upload(
            big, image_id=image_id, store_id="cheap", progress=progress
        )
    assert victims
    assert image_id in str(info.value)
    assert "'saving'" in str(info.value)
    # no other image was made for it
    assert [i["id"] for i in client.list_images(name="ha-caller")] in (
        [],
        [image_id],
    )


def test_graceful_stop_of_the_node_mid_upload_completes(
    cluster: launcher.GlanceCluster, big: Path
) -> None:
    progress, victims = kill_holder_at(cluster, 64 * MiB, graceful=True)
    result = uploader(cluster.url).upload(
        big, upload.ImageMeta("ha-term"), store_id="cheap", progress=progress
    )
    assert victims
    assert result.verified and result.attempts == 1
    assert result.checksum == md5_of(big)


def test_a_node_without_a_store_is_no_broken_verdict(
    cluster: launcher.GlanceCluster, tmp_path: Path
) -> None:
    """Mid-way through a rolling change node b lacks ``cheap``: uploads
    naming it still land, and ``audit`` does not call the type broken.
    """
    node = cluster.node("b")
    node.stop()
    node.without = ["cheap"]
    node.start()
    cluster.proxy.wait_states({"a": "UP", "b": "UP"}, 60)
    data = tmp_path / "small.raw"
    data.write_bytes(os.urandom(4 * MiB))
    up = uploader(cluster.url, store_cache_ttl=0)
    for i in range(4):  # round robin: some PUTs reach node b
        result = up.upload(
            data, upload.ImageMeta(f"ha-disagree-{i}"), store_id="cheap"
        )
        assert result.verified and result.store == "cheap"
    types = tmp_path / "types.json"
    types.write_text(
        json.dumps(
            {
                "volume_types": [
                    {
                        "id": "t1",
                        "name": "uses-cheap",
                        "extra_specs": {"image_service:store_id": "cheap"},
                    }
                ]
            }
        )
    )
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-m", "volume_image.cli.main",
             "--os-auth-type", "none", "--os-endpoint", cluster.url,
             "audit", "--from-file", str(types)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode in (0, 4), done.stdout + done.stderr
        assert "broken" not in done.stdout or "are broken" not in done.stdout


def test_sweep_removes_what_a_killed_upload_left(
    cluster: launcher.GlanceCluster, big: Path
) -> None:
    """The upload process and the node holding its upload die together:
    the image stays 'saving'; ``sweep`` finds and deletes it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "volume_image.cli.main",
         "--os-auth-type", "none", "--os-endpoint", cluster.url,
         "upload", str(big), "--name", "ha-orphan", "--store-id", "cheap"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = make_client(cluster.url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = client.list_images(name="ha-orphan", status="saving")
            if found:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the upload never started")
        proc.send_signal(signal.SIGKILL)
        victim = holder(cluster)
        cluster.node(victim).kill()
    finally:
        proc.wait()
    # until haproxy marks it down, a request may still reach the dead node
    cluster.proxy.wait_states({victim: "DOWN"}, 60)
    image_id = found[0]["id"]
    assert client.get_image(image_id)["status"] == "saving"
    cli = [sys.executable, "-m", "volume_image.cli.main", "--os-auth-type",
           "none", "--os-endpoint", cluster.url, "sweep"]  # fmt: skip
    listed = subprocess.run(
        [*cli, "--older-than", "0", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert image_id in {i["image_id"] for i in json.loads(listed.stdout)}
    swept = subprocess.run(
        [*cli, "--older-than", "0", "--delete"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    resp = requests.get(f"{cluster.url}/v2/images/{image_id}", timeout=30)
    assert resp.status_code == 404
