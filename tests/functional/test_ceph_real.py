"""Ceph, as Glance multi-store was made for: the example configuration
(``fast:rbd, cheap:rbd, shared:file, reliable:file``, the two rbd stores
on two clusters), Cinder 29's real ``RBDDriver`` as upstream and wrapped
by ours, on one stack under Keystone with a service token
(:class:`harness.servers.ceph_site.CephSite`).

Cluster A (cephx, with a mgr) holds the volumes and store ``fast``;
cluster B (no auth) holds store ``cheap``.  Every upload is checked where
it must land (that store's cluster and pool, nowhere else) and by its
bytes.  An upload of ours from an RBD volume into ``fast`` (same fsid)
takes the same-cluster fast path: no image byte through HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import launcher
from harness.servers.ceph_site import GIB, MIB, CephSite
from volume_image.pipeline import records as pipeline_records

from .conftest import _SERVERS

pytestmark = pytest.mark.functional

#: the volume's written head; the rest of its 1 GiB is never written
WRITTEN = 8 * MIB


@pytest.fixture(scope="module")
def site(
    rabbit: launcher.RabbitServer,
    keystone: launcher.KeystoneServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CephSite]:
    ceph_site = CephSite(
        tmp_path_factory.mktemp("ceph-site"),
        keystone,
        rabbit.vhost_url("ceph-stack"),
    )
    try:
        ceph_site.start()
        _SERVERS.extend(ceph_site.servers)
        yield ceph_site
    finally:
        ceph_site.stop()


def _upload(
    site: CephSite,
    backend: str,
    store: str | None,
    disk_format: str = "raw",
    seed: int = 1,
    name: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    volume, md5 = site.new_volume(backend, store, written=WRITTEN, seed=seed)
    demo = site.stack.rest(user="demo")
    image_id = demo.upload_to_image(
        volume["id"],
        name or f"ceph-{backend}-{store}",
        disk_format=disk_format,
    )
    after = demo.wait_volume_leaves(volume["id"], "uploading", timeout=180)
    return after, site.wait_hashed(image_id), md5


def _log(site: CephSite) -> str:
    return site.stack.service_log("cinder-volume").read_text()


def test_glance_lists_the_example_stores(site: CephSite) -> None:
    resp = requests.get(
        f"{site.glance.url}/v2/info/stores/detail",
        headers=site.admin_headers(),
        timeout=30,
    )
    stores = {s["id"]: s for s in resp.json()["stores"]}
    assert sorted(stores) == ["cheap", "fast", "reliable", "shared"]
    assert stores["fast"]["properties"]["fsid"] == site.a.fsid
    assert stores["cheap"]["properties"]["fsid"] == site.b.fsid
    assert site.a.fsid != site.b.fsid


@pytest.mark.parametrize("backend", ["upstream", "ours"])
@pytest.mark.parametrize("store", ["fast", "cheap", None])
def test_raw_upload_lands_in_its_cluster(
    site: CephSite, backend: str, store: str | None
) -> None:
    before = site.rbd_images()
    after, image, md5 = _upload(site, backend, store)
    assert after["status"] == "available"
    target = store or "fast"
    assert image["status"] == "active"
    assert image["stores"] == target
    assert image["checksum"] == md5
    assert image["size"] == GIB
    now = site.rbd_images()
    here, there = ("a", "b") if target == "fast" else ("b", "a")
    assert sorted(set(now[here]) - set(before[here])) == [image["id"]]
    assert now[there] == before[there]
    info = site.clusters[target].rbd_info("images", image["id"])
    assert info["snaps"] == {"snap": True}
    assert info["parent"] is None
    direct = f"became image {image['id']} in store fast inside Ceph"
    assert (direct in _log(site)) is (backend == "ours" and target == "fast")


def test_the_fast_path_sends_no_byte_and_frees_the_volume(
    site: CephSite,
) -> None:
    mark = site.glance.log_path.stat().st_size
    after, image, md5 = _upload(site, "ours", "fast", seed=7)
    assert image["checksum"] == md5
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"]
    # no data PUT reached Glance for this image
    text = site.glance.log_path.read_text()[mark:]
    assert f"/v2/images/{image['id']}/file" not in text
    assert f"{image['id']}/locations" in text
    assert "flatten by mgr" in _log(site)
    # nothing of the volume stays tied to the image
    volume = f"volume-{after['id']}"
    assert site.a.rbd_snaps("volumes2", volume) == {}
    demo = site.stack.rest(user="demo")
    demo.extend_volume(after["id"], 2)
    demo.wait_volume(after["id"])
    snap = demo.create_snapshot(after["id"])
    demo.wait_snapshot(snap["id"])
    demo.delete_snapshot(snap["id"])
    demo.delete_volume(after["id"])
    assert volume not in site.a.rbd_ls("volumes2")
    # and the image, alone now, reads back the volume's bytes
    assert site.image_md5(image["id"]) == md5


@pytest.mark.parametrize("backend", ["upstream", "ours"])
@pytest.mark.parametrize("store", ["fast", "cheap"])
def test_qcow2_upload_lands_in_its_cluster(
    site: CephSite, backend: str, store: str, tmp_path: Path
) -> None:
    before = site.rbd_images()
    after, image, md5 = _upload(site, backend, store, "qcow2", seed=3)
    assert after["status"] == "available"
    assert image["status"] == "active"
    assert image["disk_format"] == "qcow2"
    assert image["stores"] == store
    now = site.rbd_images()
    here = "a" if store == "fast" else "b"
    assert sorted(set(now[here]) - set(before[here])) == [image["id"]]
    # the qcow2 holds the volume's bytes
    qcow = tmp_path / "image.qcow2"
    site.image_md5(image["id"], qcow)
    raw = tmp_path / "image.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow, raw],
        check=True,
    )
    got = hashlib.md5()  # noqa: S324 - the volume's md5
    with open(raw, "rb") as f:
        while chunk := f.read(MIB):
            got.update(chunk)
    assert got.hexdigest() == md5
    if backend == "ours" and store == "fast":
        assert (
            f"image {image['id']} streams: disk_format qcow2 needs a "
            "conversion" in _log(site)
        )


def test_cross_cluster_streams_and_says_why(site: CephSite) -> None:
    _, image, md5 = _upload(site, "ours", "cheap", seed=5)
    assert (image["stores"], image["checksum"]) == ("cheap", md5)
    assert (
        f"image {image['id']} streams: store cheap is on Ceph cluster "
        f"{site.b.fsid}, the volume on {site.a.fsid}" in _log(site)
    )


def test_a_refused_location_streams_and_leaves_nothing_in_ceph(
    site: CephSite,
) -> None:
    """Glance's policy refuses the location (this Glance's rule refuses
    images named ``refused-location``): the Ceph work is undone and the
    upload streams; the volume keeps no snapshot, the pool holds the
    streamed image only.
    """
    before = site.a.rbd_ls("images")
    after, image, md5 = _upload(
        site, "ours", "fast", seed=11, name="refused-location"
    )
    assert after["status"] == "available"
    assert (image["status"], image["stores"]) == ("active", "fast")
    assert image["checksum"] == md5
    assert sorted(set(site.a.rbd_ls("images")) - set(before)) == [image["id"]]
    assert site.a.rbd_info("images", image["id"])["parent"] is None
    assert site.a.rbd_snaps("volumes2", f"volume-{after['id']}") == {}
    assert (
        f"image {image['id']} streams: Glance refused the location (403"
        in _log(site)
    )


def _base_image(site: CephSite, stores: list[str]) -> str:
    """An image (64 MiB of a pattern) in ``stores``: uploaded to the
    first, copied to the others by Glance's copy-image.
    """
    headers = site.admin_headers()
    made = requests.post(
        f"{site.glance.url}/v2/images",
        # public: the user who uploads the volume must see its base image
        json={
            "name": "base",
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
        },
        headers=headers,
        timeout=30,
    )
    made.raise_for_status()
    base = made.json()["id"]
    put = requests.put(
        f"{site.glance.url}/v2/images/{base}/file",
        data=bytes(range(256)) * (64 * MIB // 256),
        headers={
            **headers,
            "Content-Type": "application/octet-stream",
            "X-Image-Meta-Store": stores[0],
        },
        timeout=120,
    )
    assert put.status_code == 204, put.text
    if stores[1:]:
        copy = requests.post(
            f"{site.glance.url}/v2/images/{base}/import",
            json={"method": {"name": "copy-image"}, "stores": stores[1:]},
            headers=headers,
            timeout=30,
        )
        assert copy.status_code == 202, copy.text
        deadline = time.monotonic() + 120
        while set(site.image(base)["stores"].split(",")) != set(stores):
            assert time.monotonic() < deadline, site.image(base)
            time.sleep(0.5)
    return base


def test_co_location_on_rbd_stores_of_two_clusters(site: CephSite) -> None:
    """A volume whose base image is in ``fast`` and ``cheap`` (two
    clusters), of a type naming no store: the image is uploaded into one
    and copied by Glance into the other; each cluster holds its RBD image.
    """
    base = _base_image(site, ["fast", "cheap"])
    before = site.rbd_images()
    volume, md5 = site.new_volume("ours", None, written=WRITTEN, seed=13)
    demo = site.stack.rest(user="demo")
    demo.call(
        "POST",
        f"/volumes/{volume['id']}/action",
        {"os-set_image_metadata": {"metadata": {"image_id": base}}},
    )
    image_id = demo.upload_to_image(volume["id"], "ceph-colocated")
    after = demo.wait_volume_leaves(volume["id"], "uploading", timeout=300)
    assert after["status"] == "available"
    image = site.image(image_id)
    assert image["status"] == "active"
    assert sorted(image["stores"].split(",")) == ["cheap", "fast"]
    assert image["checksum"] == md5
    now = site.rbd_images()
    for cluster in ("a", "b"):
        assert sorted(set(now[cluster]) - set(before[cluster])) == [image_id]
    log = _log(site)
    assert (
        f"image {image_id} streams: co-location with the base image "
        "chooses the stores" in log
    )
    assert f"co-location with base image {base}" in log


def test_sweep_clears_a_killed_upload_into_rbd(
    site: CephSite, tmp_path: Path
) -> None:
    """``volume-image upload`` into ``cheap`` (rbd, cluster B) killed
    mid-upload: its image is left, and ``sweep --delete`` removes it;
    neither cluster keeps an RBD image of it.
    """
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.write(bytes(range(256)) * (64 * MIB // 256))
        f.truncate(2 * GIB)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(site.keystone.credentials("demo"))
    # this Glance is not in the catalog
    cli = [
        sys.executable, "-m", "volume_image.cli.main",
        "--os-endpoint-override", site.glance.url,
    ]  # fmt: skip
    before = site.rbd_images()
    records = pipeline_records.directory(None)
    known = set(records.glob("*.json")) if records.exists() else set()
    proc = subprocess.Popen(
        [*cli, "upload", str(big), "--name", "rbd-orphan", "--store-id",
         "cheap"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    image_id = ""
    try:
        # the upload's record names its image as soon as it is created
        # (Glance, one worker here, answers nothing else while it takes
        # the data: the record is what can be watched)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            for path in set(records.glob("*.json")) - known:
                try:
                    mine = json.loads(path.read_text())["pid"] == proc.pid
                except (OSError, ValueError, KeyError):
                    continue  # not written whole yet, or not a record
                image_id = path.stem if mine else image_id
            if image_id:
                break
            time.sleep(0.05)
        if proc.poll() is not None or not image_id:
            pytest.fail(
                f"no upload to kill (exit {proc.poll()}): "
                f"{proc.communicate()[0]!r}"
            )
        time.sleep(3)  # the data flows into Ceph
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipe
    swept = subprocess.run(
        [*cli, "sweep", "--older-than", "0", "--delete"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert image_id in swept.stdout
    gone = requests.get(
        f"{site.glance.url}/v2/images/{image_id}",
        headers=site.admin_headers(),
        timeout=30,
    )
    assert gone.status_code == 404
    assert site.rbd_images() == before


def test_an_unreachable_cluster_is_named_and_nothing_is_left(
    site: CephSite,
) -> None:
    """Cluster B stops answering (its daemons paused) during an upload of
    ours into ``cheap``: the upload fails with a message naming the store
    and its cluster, the volume is ``available`` again and no image is
    left.  (Runs last: it pauses a cluster.)
    """
    volume, _ = site.new_volume("ours", "cheap", written=WRITTEN, seed=17)
    demo = site.stack.rest(user="demo")
    pids = list(site.b.pids().values())
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        image_id = demo.upload_to_image(volume["id"], "ceph-unreachable")
        after = demo.wait_volume_leaves(volume["id"], "uploading", timeout=300)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert after["status"] == "available"
    gone = requests.get(
        f"{site.glance.url}/v2/images/{image_id}",
        headers=site.admin_headers(),
        timeout=30,
    )
    assert gone.status_code == 404 or gone.json()["status"] == "deleted"
    log = _log(site)
    assert (
        f"Store cheap writes to pool images of Ceph cluster {site.b.fsid}"
        in log
    )
