"""The upload pipeline against a real Glance 33 (and real qemu-img)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from keystoneauth1 import adapter, session
from oslo_utils.imageutils import format_inspector

from harness import launcher
from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import stores, validation
from volume_image.pipeline import uploader as upload

from .conftest import count_requests, make_client
from .helpers import CuttingProxy, GlanceProxy, ThrottledFile

pytestmark = pytest.mark.functional

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB, sparse, with 4 MiB of random data at the start."""
    path = tmp_path_factory.mktemp("vol") / "volume.raw"
    with open(path, "wb") as f:
        f.write(os.urandom(4 * MiB))
        f.truncate(64 * MiB)
    return path


def uploader(url: str, **settings: object) -> upload.Uploader:
    return upload.Uploader(
        make_client(url),
        config.Settings(upload_retry_delay=0.1, **settings),  # type: ignore[arg-type]
    )


def images(server: launcher.GlanceServer) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{server.url}/v2/images") as resp:  # noqa: S310
        return list(json.load(resp)["images"])


def download(server: launcher.GlanceServer, image_id: str, dest: Path) -> Path:
    with (
        urllib.request.urlopen(  # noqa: S310
            f"{server.url}/v2/images/{image_id}/file"
        ) as resp,
        open(dest, "wb") as f,
    ):
        while chunk := resp.read(MiB):
            f.write(chunk)
    return dest


@pytest.mark.parametrize("store", ["fast", "cheap"])
def test_upload_to_each_writable_store(
    glance_server: launcher.GlanceServer, volume: Path, store: str
) -> None:
    result = uploader(glance_server.url).upload(
        volume,
        upload.ImageMeta(f"to-{store}"),
        extra_specs={
            "image_service:store_id": store,
            "volume_backend_name": "x",
        },
    )
    assert result.store == store and result.verified
    assert result.size == 64 * MiB and result.attempts == 1
    stored = glance_server.store_dir(store) / result.image_id
    assert stored.stat().st_size == 64 * MiB
    other = "cheap" if store == "fast" else "fast"
    assert not (glance_server.store_dir(other) / result.image_id).exists()


def test_default_store_when_spec_unset(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    result = uploader(glance_server.url).upload(
        volume,
        upload.ImageMeta("default"),
        extra_specs={"volume_backend_name": "x"},
    )
    assert result.store == "fast"
    assert (glance_server.store_dir("fast") / result.image_id).exists()


@pytest.mark.parametrize(
    ("store", "error"),
    [
        ("web", errors.ReadOnlyStore),
        ("os_glance_staging_store", errors.ReservedStore),
        ("os_glance_tasks_store", errors.ReservedStore),
        ("nosuch", errors.UnknownStore),
        ("cheap\r\nX-Evil: 1", errors.InvalidStoreId),
    ],
)
def test_bad_stores_create_nothing(
    glance_server: launcher.GlanceServer,
    volume: Path,
    store: str,
    error: type[errors.SpecError],
) -> None:
    before = count_requests(glance_server, "POST /v2/images")
    with pytest.raises(error):
        uploader(glance_server.url).upload(
            volume, upload.ImageMeta("bad"), store_id=store
        )
    assert count_requests(glance_server, "POST /v2/images") == before
    assert not [i for i in images(glance_server) if i["name"] == "bad"]


@pytest.mark.parametrize(
    ("disk_format", "qemu_format"),
    [
        ("qcow2", "qcow2"),
        ("vmdk", "vmdk"),
        ("vhd", "vpc"),
        ("vhdx", "vhdx"),
        ("vdi", "vdi"),
    ],
)
def test_conversion(
    glance_server: launcher.GlanceServer,
    volume: Path,
    tmp_path: Path,
    disk_format: str,
    qemu_format: str,
) -> None:
    """Each format qemu-img writes: the image is that format, and the
    guest data converts back byte for byte.
    """
    workdir = tmp_path / "conv"
    workdir.mkdir()
    result = uploader(glance_server.url, conversion_dir=str(workdir)).upload(
        volume,
        upload.ImageMeta("c", disk_format=disk_format),
        store_id="cheap",
    )
    assert result.size < 64 * MiB  # the sparse part costs nothing
    got = download(glance_server, result.image_id, tmp_path / "got.img")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", qemu_format, "--output=json", str(got)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # what the bytes are, by their content (qemu-img -f would only echo
    # the format it was told): Glance's disk_format names it
    detected = format_inspector.detect_file_format(str(got))
    assert detected.NAME == disk_format
    # VHD rounds the size up to its disk geometry
    assert info["virtual-size"] >= 64 * MiB
    back = tmp_path / "back.raw"
    subprocess.run(
        [
            *("qemu-img", "convert", "-f", qemu_format, "-O", "raw"),
            *(str(got), str(back)),
        ],
        check=True,
    )
    data = back.read_bytes()
    assert data[: 64 * MiB] == volume.read_bytes()
    assert data[64 * MiB :].count(0) == len(data) - 64 * MiB
    # temporary files removed; the upload's record too, once it is active
    assert [p.name for p in workdir.iterdir()] == ["volume_image-records"]
    assert list((workdir / "volume_image-records").iterdir()) == []


def test_compressed_container(
    glance_server: launcher.GlanceServer, volume: Path, tmp_path: Path
) -> None:
    result = uploader(glance_server.url).upload(
        volume,
        upload.ImageMeta("gz", container_format="compressed"),
        store_id="cheap",
    )
    got = download(glance_server, result.image_id, tmp_path / "got.gz")
    assert gzip.decompress(got.read_bytes()) == volume.read_bytes()


class FlipsOneBit(requests.adapters.HTTPAdapter):
    """A transport that flips the first bit of an upload's body."""

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        body = request.body
        if request.method == "PUT" and body is not None:

            def flipped() -> Iterator[bytes]:
                first = True
                for chunk in body:  # type: ignore[union-attr]
                    data = bytes(chunk)
                    if first and data:
                        data = bytes([data[0] ^ 1]) + data[1:]
                        first = False
                    yield data

            request.body = flipped()  # type: ignore[assignment]
        return super().send(request, **kwargs)


def test_checksum_verification_catches_corruption(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    # the transport flips one bit of what was hashed: Glance stores other
    # bytes than the ones we hashed, as a bad NIC or proxy would
    http = requests.Session()
    http.mount("http://", FlipsOneBit())
    up = upload.Uploader(
        glance.GlanceClient(
            adapter.Adapter(
                session.Session(session=http, timeout=30),
                endpoint_override=glance_server.url,
            )
        ),
        config.Settings(upload_retry_delay=0.1),
    )
    with pytest.raises(errors.IntegrityError) as info:
        up.upload(volume, upload.ImageMeta("corrupt"), store_id="cheap")
    assert "os_hash_value (sha512)" in str(info.value)
    image_id = info.value.image_id
    assert image_id and not [
        i for i in images(glance_server) if i["id"] == image_id
    ]
    assert not (glance_server.store_dir("cheap") / image_id).exists()


def test_stream_cut_then_retried_from_byte_zero(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    proxy = CuttingProxy(glance_server.port, cut_after=10 * MiB)
    try:
        result = uploader(proxy.url).upload(
            volume, upload.ImageMeta("cut"), store_id="cheap"
        )
    finally:
        proxy.close()
    assert proxy.cuts_done == 1
    assert result.attempts == 2 and result.verified
    stored = glance_server.store_dir("cheap") / result.image_id
    assert stored.read_bytes() == volume.read_bytes()


def test_no_retry_when_retries_are_off(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    proxy = CuttingProxy(glance_server.port, cut_after=10 * MiB)
    try:
        with pytest.raises(errors.GlanceUnavailable):
            uploader(proxy.url, upload_retries=0).upload(
                volume, upload.ImageMeta("cut-once"), store_id="cheap"
            )
    finally:
        proxy.close()
    assert not [i for i in images(glance_server) if i["name"] == "cut-once"]


def test_cancel_from_another_thread(
    glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    data = os.urandom(32 * MiB)
    src = ThrottledFile(data, rate=8 * MiB)
    cancel = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 4 * MiB:
            cancel.set()

    with pytest.raises(errors.UploadCancelled):
        uploader(glance_server.url, conversion_dir=str(tmp_path)).upload(
            upload.Source(fileobj=src, size=len(data)),
            upload.ImageMeta("cancelled"),
            store_id="cheap",
            progress=progress,
            cancel=cancel,
        )
    assert src.read_bytes < len(data)
    assert not [i for i in images(glance_server) if i["name"] == "cancelled"]
    records = tmp_path / "volume_image-records"  # held, then dropped
    assert [p for p in tmp_path.iterdir() if p != records] == []
    assert not records.exists() or list(records.iterdir()) == []


def test_concurrent_uploads_respect_the_cap(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    up = uploader(glance_server.url, max_concurrent_uploads=2)
    active = 0
    peak = 0
    lock = threading.Lock()
    results: list[upload.UploadResult] = []

    def progress(done: int, total: int) -> None:
        nonlocal active, peak
        with lock:
            if done <= upload.config.Settings().chunk_size:
                active += 1
                peak = max(peak, active)
            if done == total:
                active -= 1

    failures: list[BaseException] = []

    def one(n: int) -> None:
        try:
            results.append(
                up.upload(
                    volume,
                    upload.ImageMeta(f"conc-{n}"),
                    store_id=("fast", "cheap")[n % 2],
                    progress=progress,
                )
            )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(results) == 4 and all(r.verified for r in results)
    assert len({r.image_id for r in results}) == 4
    assert peak == 2


def test_existing_queued_image(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    client = make_client(glance_server.url)
    image = client.create_image(
        {"name": "given", "disk_format": "raw", "container_format": "bare"}
    )
    result = upload.Uploader(client).upload(
        volume, image_id=image["id"], store_id="cheap"
    )
    assert result.image_id == image["id"] and result.store == "cheap"
    # now active: a second upload must fail and must not delete it
    with pytest.raises(errors.ImageStateConflict):
        upload.Uploader(client).upload(volume, image_id=image["id"])
    assert client.get_image(image["id"])["status"] == "active"


def test_store_removed_since_catalog_was_cached(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    client = make_client(glance_server.url)
    stale = stores.parse_stores(
        {
            "stores": [
                {"id": "fast", "default": "true"},
                {"id": "cheap"},
                {"id": "gone"},
            ]
        }
    )
    answers = [stale]

    def fetch() -> stores.StoreCatalog:
        return answers.pop(0) if answers else client.get_store_catalog()

    up = upload.Uploader(client, cache=validation.StoreCatalogCache(fetch))
    with pytest.raises(errors.UnknownStore) as info:
        up.upload(volume, upload.ImageMeta("gone"), store_id="gone")
    assert "'gone'" in str(info.value)
    assert "Writable stores now: cheap, fast" in str(info.value)
    assert not [i for i in images(glance_server) if i["name"] == "gone"]


def test_no_multistore_glance(
    glance_single: launcher.GlanceServer, volume: Path
) -> None:
    up = uploader(glance_single.url)
    before = count_requests(glance_single, "POST /v2/images")
    with pytest.raises(errors.MultiStoreDisabled):
        up.upload(volume, upload.ImageMeta("x"), store_id="file")
    assert count_requests(glance_single, "POST /v2/images") == before
    result = up.upload(volume, upload.ImageMeta("plain"))
    assert result.verified and result.size == 64 * MiB


def test_glance_killed_mid_upload(tmp_path: Path, volume: Path) -> None:
    """A crash leaves the image 'saving' for good; we say so and stop."""
    server = launcher.GlanceServer(tmp_path / "g", processes=1)
    server.start()
    try:
        data = os.urandom(48 * MiB)
        src = ThrottledFile(data, rate=8 * MiB)
        killed = threading.Event()

        def progress(done: int, total: int) -> None:
            if done >= 8 * MiB and not killed.is_set():
                killed.set()
                server.kill()

        up = uploader(server.url, upload_retries=1)
        with pytest.raises(errors.GlanceError) as info:
            up.upload(
                upload.Source(fileobj=src, size=len(data)),
                upload.ImageMeta("crash"),
                store_id="cheap",
                progress=progress,
            )
        assert "may be left in 'saving' state" in str(info.value)
        server.start()
        left = [i for i in images(server) if i["name"] == "crash"]
        assert [i["status"] for i in left] == ["saving"]
        # only DELETE helps; it works once Glance is back
        assert make_client(server.url).delete_image(str(left[0]["id"]))
    finally:
        server.stop()


def test_memory_stays_flat_for_a_multi_gib_sparse_source(
    glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    """Peak RSS of a 2 GiB upload against a 64 MiB one, measured."""
    script = (
        "import resource, sys\n"
        "from keystoneauth1 import adapter, session\n"
        "from volume_image.clients import glance\n"
        "from volume_image.pipeline import uploader as upload\n"
        "c = glance.GlanceClient(adapter.Adapter(session.Session(timeout=60),"
        " endpoint_override=sys.argv[1]))\n"
        "r = upload.Uploader(c).upload(sys.argv[2], upload.ImageMeta('mem'),"
        " store_id='cheap')\n"
        "c.delete_image(r.image_id)\n"
        "print(r.size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    peaks = {}
    for size in (64 * MiB, 2048 * MiB):
        path = tmp_path / f"sparse-{size}"
        with open(path, "wb") as f:
            f.truncate(size)
        out = subprocess.run(
            [sys.executable, "-c", script, glance_server.url, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout.split()
        assert int(out[0]) == size
        peaks[size] = int(out[1])  # KiB
    print(f"peak RSS KiB: {peaks}")
    assert peaks[2048 * MiB] - peaks[64 * MiB] < 16 * 1024


def test_block_device_source(
    glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    """A real block device (a loop device): its size comes from the device."""
    backing = tmp_path / "backing.img"
    backing.write_bytes(os.urandom(16 * MiB))
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        assert Path(dev).stat().st_size == 0  # why the device is asked
        src = upload.Source(dev)
        assert src.size == 16 * MiB
        result = uploader(glance_server.url).upload(
            src, upload.ImageMeta("blockdev"), store_id="cheap"
        )
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)
    assert result.size == 16 * MiB and result.verified
    stored = glance_server.store_dir("cheap") / result.image_id
    assert stored.read_bytes() == backing.read_bytes()


@pytest.mark.parametrize(("failures", "verified"), [(3, True), (50, False)])
def test_verification_gets_failing_never_delete_the_image(
    glance_server: launcher.GlanceServer,
    volume: Path,
    failures: int,
    verified: bool,
) -> None:
    """A node restarting behind the load balancer answers 503 to the
    verification GETs: a few are ridden out; if they go on, the finished
    upload is kept, unverified (exit 6), never deleted.
    """
    proxy = GlanceProxy(glance_server.url)
    try:
        env = {"OS_AUTH_TYPE": "none", "OS_ENDPOINT": proxy.url}
        args = ["upload", str(volume), "--name", f"verify-{failures}"]
        args += ["--store-id", "cheap", "--format", "json"]
        # the PUT passes; then the image GETs fail

        def arm() -> None:
            proxy.fail_image_gets = failures

        proxy.on_put_done = arm
        done = subprocess.run(
            [sys.executable, "-m", "volume_image.cli.main", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
            check=False,
        )
    finally:
        proxy.stop()
    assert done.returncode == (0 if verified else 6), done.stderr
    result = json.loads(done.stdout)
    assert result["verified"] is verified
    image = make_client(glance_server.url).get_image(result["image_id"])
    assert image["status"] == "active"
    if not verified:
        assert "kept unverified" in result["unverified_reason"]
        assert "kept unverified" in done.stderr
