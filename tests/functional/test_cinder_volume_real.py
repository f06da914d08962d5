"""volume_image inside a real cinder-volume 29, next to upstream's path.

One cinder-volume serves two backends of the test file driver:
``upstream`` (Cinder's own upload) and ``ours`` (the same driver wrapped
by ``volume_image.cinder.driver.StoreAwareDriver``, switched on in
cinder.conf alone).  Every case runs on both, driven by the real
``cinder upload-to-image``; the assertions are on ours, and the
side-by-side table in the docs is what this run measured
(``VOLUME_IMAGE_WRITE_DOCS=1`` rewrites it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import difflib
import gzip
import hashlib
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import cinderapi, launcher

from . import cinder_volume_cases as cases

pytestmark = pytest.mark.functional

MIB = 1 << 20
#: [volume_image] max_concurrent_uploads of the stack (conftest)
CAP = 2
KEY = "image_service:store_id"
PATTERN = hashlib.sha256(b"volume_image").digest() * (MIB // 32)
DOC_TABLE = (
    Path(__file__).parents[2] / "doc" / "source" / "cinder-volume-cases.inc"
)
_names = itertools.count()
_RESULTS: dict[str, tuple[cases.Outcome, cases.Outcome]] = {}
#: rows of the docs' table: every case of this module
EXPECTED_ROWS = 14


@pytest.fixture(scope="module")
def rest(cinder_stack: launcher.CinderStack) -> cinderapi.CinderRest:
    return cinder_stack.rest()


@dataclasses.dataclass
class Volume:
    id: str
    backend: str
    md5: str
    path: Path


class Stack:
    """What a case needs: the stack, its Glance and the REST client."""

    def __init__(
        self,
        stack: launcher.CinderStack,
        glance: launcher.GlanceServer,
        rest: cinderapi.CinderRest,
    ) -> None:
        self.stack = stack
        self.glance = glance
        self.rest = rest
        self.volumes: list[str] = []

    def volume(
        self,
        backend: str,
        specs: dict[str, str],
        mib: int = 32,
        *,
        source_format: str | None = None,
    ) -> Volume:
        """A volume on ``backend`` whose file holds ``mib`` MiB of the
        pattern (or, with ``source_format``, that format's image written
        by the test: see :meth:`write_image`).
        """
        vtype = self.rest.backend_type(backend, specs)
        made = self.rest.create_volume(1, volume_type=vtype["id"])
        self.volumes.append(made["id"])
        self.rest.wait_volume(made["id"])
        path = self.stack.volume_file(made["id"])
        md5 = hashlib.md5()  # noqa: S324 - Glance's checksum is an md5
        with open(path, "r+b") as f:
            f.truncate(mib * MIB)
            for _ in range(mib):
                f.write(PATTERN)
                md5.update(PATTERN)
        return Volume(made["id"], backend, md5.hexdigest(), path)

    def upload(
        self,
        volume: Volume,
        disk_format: str = "raw",
        container_format: str = "bare",
    ) -> str:
        """``cinder upload-to-image``; the new image's id."""
        done = self.stack.cli(
            "upload-to-image",
            "--disk-format",
            disk_format,
            "--container-format",
            container_format,
            volume.id,
            f"vi-{volume.backend}-{next(_names)}",
        )
        table = cinderapi.parse_table(done.stdout)
        assert table["status"] == "uploading", done.stdout
        return table["image_id"]

    def finish(self, volume: Volume, timeout: float = 180) -> dict[str, Any]:
        return self.rest.wait_volume_leaves(
            volume.id, "uploading", timeout=timeout
        )

    def image(self, image_id: str) -> dict[str, Any] | None:
        resp = requests.get(
            f"{self.glance.url}/v2/images/{image_id}", timeout=30
        )
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def download(self, image_id: str, dest: Path) -> Path:
        with requests.get(
            f"{self.glance.url}/v2/images/{image_id}/file",
            timeout=60,
            stream=True,
        ) as resp:
            assert resp.status_code == 200, resp.text
            with open(dest, "wb") as f:
                for chunk in resp.iter_content(MIB):
                    f.write(chunk)
        return dest

    def reason(self, volume: Volume, image_id: str) -> str:
        """Why the upload failed, from cinder-volume's log."""
        log = self.stack.service_log("cinder-volume").read_text(
            errors="replace"
        )
        return cases.failure_reason(log, volume.backend, image_id)

    def run(
        self,
        backend: str,
        specs: dict[str, str],
        *,
        disk_format: str = "raw",
        container_format: str = "bare",
        mib: int = 32,
    ) -> tuple[Volume, str, cases.Outcome]:
        """Upload a new volume; a converted image's checksum is not
        compared (its bytes are not the volume's).
        """
        volume = self.volume(backend, specs, mib)
        t0 = time.monotonic()
        image_id = self.upload(volume, disk_format, container_format)
        outcome = self.settle(
            volume,
            image_id,
            checksum=(disk_format, container_format) == ("raw", "bare"),
            t0=t0,
        )
        return volume, image_id, outcome

    def settle(
        self,
        volume: Volume,
        image_id: str,
        *,
        checksum: bool = True,
        t0: float | None = None,
    ) -> cases.Outcome:
        """Wait for the upload to end; what became of the volume and the
        image (the reason from the log when the image is not active).
        """
        after = self.finish(volume)
        image = self.image(image_id)
        active = bool(image and image["status"] == "active")
        return cases.Outcome.of(
            after,
            image,
            None if active else self.reason(volume, image_id),
            md5_ok=bool(image and image.get("checksum") == volume.md5)
            if checksum
            else None,
            seconds=0.0 if t0 is None else time.monotonic() - t0,
        )


@pytest.fixture(scope="module")
def stack(
    cinder_stack: launcher.CinderStack,
    glance_server: launcher.GlanceServer,
    rest: cinderapi.CinderRest,
) -> Iterator[Stack]:
    made = Stack(cinder_stack, glance_server, rest)
    yield made
    for volume_id in made.volumes:
        rest.delete_volume(volume_id)


def both(
    stack: Stack, case: str, specs: dict[str, str], **kw: Any
) -> tuple[Volume, str, cases.Outcome]:
    """Run ``case`` upstream and ours; record both; return ours."""
    _, _, upstream = stack.run("upstream", specs, **kw)
    volume, image_id, ours = stack.run("ours", specs, **kw)
    _RESULTS[case] = (upstream, ours)
    return volume, image_id, ours


@pytest.mark.parametrize(
    ("case", "specs", "store"),
    [
        ("store_id=cheap", {KEY: "cheap"}, "cheap"),
        ("store_id=fast", {KEY: "fast"}, "fast"),
        ("no spec (default store)", {}, "fast"),
        ("key in another case", {"Image_Service:Store_Id": "cheap"}, "cheap"),
    ],
)
def test_lands_in_the_store_of_the_type(
    stack: Stack, case: str, specs: dict[str, str], store: str
) -> None:
    volume, image_id, ours = both(stack, case, specs)
    assert ours.volume_status == "available"
    image = stack.image(image_id)
    assert image is not None
    assert image["status"] == "active"
    assert image["stores"] == store
    assert image["checksum"] == volume.md5
    assert image["size"] == 32 * MIB
    log = stack.stack.service_log("cinder-volume").read_text()
    assert f"uploaded to image {image_id} in store {store}" in log
    assert "verified True" in log


@pytest.mark.parametrize(
    ("case", "store", "message"),
    [
        ("read-only store", "web", "Glance store 'web' is read-only"),
        ("unknown store", "nosuch", "Glance has no store 'nosuch'"),
        (
            "reserved store",
            "os_glance_staging_store",
            "reserved for Glance's internal use",
        ),
    ],
)
def test_refused_stores_fail_before_any_data(
    stack: Stack, case: str, store: str, message: str
) -> None:
    puts = _glance_puts(stack.glance)
    _, image_id, ours = both(stack, case, {KEY: store})
    assert ours.volume_status == "available"
    assert stack.image(image_id) is None
    assert message in ours.reason
    # no PUT of data went to Glance for our image
    assert not [p for p in _glance_puts(stack.glance) if p not in puts and
                image_id in p]  # fmt: skip


def _glance_puts(glance: launcher.GlanceServer) -> list[str]:
    return [
        line
        for line in glance.log_path.read_text(errors="replace").splitlines()
        if "PUT /v2/images/" in line and "/file" in line
    ]


@pytest.mark.parametrize(
    ("case", "disk_format", "container_format"),
    [
        ("qcow2", "qcow2", "bare"),
        ("vmdk", "vmdk", "bare"),
        ("compressed", "raw", "compressed"),
    ],
)
def test_conversion_and_compression_under_eventlet(
    stack: Stack,
    tmp_path: Path,
    case: str,
    disk_format: str,
    container_format: str,
) -> None:
    volume, image_id, ours = both(
        stack,
        case,
        {KEY: "cheap"},
        disk_format=disk_format,
        container_format=container_format,
    )
    assert ours.volume_status == "available", ours
    image = stack.image(image_id)
    assert image is not None and image["status"] == "active", ours
    assert image["stores"] == "cheap"
    got = stack.download(image_id, tmp_path / "image")
    if container_format == "compressed":
        raw = tmp_path / "raw"
        with gzip.open(got) as src, open(raw, "wb") as out:
            while chunk := src.read(MIB):
                out.write(chunk)
        got = raw
    # the image holds the volume's bytes, in the asked format
    subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", disk_format,
         str(volume.path), str(got)],
        check=True, capture_output=True,
    )  # fmt: skip


def test_qcow2_compressed_in_cinders_conversion_dir(
    stack: Stack, tmp_path: Path
) -> None:
    """Cinder's ``image_compress_on_upload`` (true by default) and
    ``image_conversion_dir`` (``$state_path/conversion``) decide inside
    cinder-volume, where ``[volume_image]`` does not set its own: the
    qcow2 image is compressed as upstream's, and the conversion's work
    directory is in Cinder's directory (and gone afterwards).
    """
    conversion = stack.stack.base / "state" / "conversion"
    log = stack.stack.service_log("cinder-volume").read_text()
    assert (
        f"conversions in {conversion}, qcow2 compressed True, qemu-img "
        "info limits 60 s CPU and 1 GiB" in log
    )
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

    images = {}
    volumes = {}
    for backend in ("upstream", "ours"):
        volume = volumes[backend] = stack.volume(backend, {KEY: "cheap"}, 64)
        watcher = threading.Thread(target=watch)
        if backend == "ours":  # the work directory lives during the upload
            watcher.start()
        try:
            image_id = stack.upload(volume, "qcow2")
            assert stack.finish(volume)["status"] == "available"
        finally:
            if backend == "ours":
                done.set()
                watcher.join()
        image = stack.image(image_id)
        assert image is not None and image["status"] == "active", image
        images[backend] = image
    assert seen, f"no work directory of ours appeared in {conversion}"
    assert not seen & set(os.listdir(conversion))
    # what the volume makes as a qcow2 without -c
    plain = tmp_path / "plain.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2",
         str(volumes["ours"].path), str(plain)],
        check=True, capture_output=True,
    )  # fmt: skip
    ours, upstream = images["ours"]["size"], images["upstream"]["size"]
    assert ours * 10 < plain.stat().st_size, (ours, plain.stat().st_size)
    assert ours <= upstream * 1.05, (ours, upstream)
    got = stack.download(images["ours"]["id"], tmp_path / "image")
    subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
         str(volumes["ours"].path), str(got)],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "option", "check"),
    [
        ("qcow2 source with a backing file", "-b", "backing_file"),
        ("qcow2 source with a data-file", "-o", "data_file"),
    ],
)
def test_unsafe_sources_are_refused(
    stack: Stack, tmp_path: Path, case: str, option: str, check: str
) -> None:
    host = tmp_path / "host-file"
    marker = b"HOST-SECRET-" + os.urandom(8).hex().encode()
    host.write_bytes(marker * 4096)
    outcomes = []
    for backend in ("upstream", "ours"):
        volume = stack.volume(backend, {KEY: "cheap"}, 1)
        volume.path.unlink()
        arg = str(host) if option == "-b" else f"data_file={host}"
        extra = ["-F", "raw"] if option == "-b" else [str(volume.path), "32M"]
        cmd = ["qemu-img", "create", "-f", "qcow2", option, arg]
        cmd += [str(volume.path)] if option == "-b" else []
        subprocess.run(cmd + (extra if option == "-o" else [*extra]),
                       check=True, capture_output=True)  # fmt: skip
        Path(f"{volume.path}.format").write_text("qcow2")
        image_id = stack.upload(volume, "raw")
        after = stack.finish(volume)
        image = stack.image(image_id)
        leaked = False
        if image is not None and image["status"] == "active":
            got = stack.download(image_id, tmp_path / f"{backend}.img")
            leaked = marker in got.read_bytes()
        outcome = cases.Outcome.of(
            after, image,
            ("HOST FILE BYTES ARE IN THE IMAGE; " if leaked else "")
            + (stack.reason(volume, image_id)
               if not image or image["status"] != "active" else ""),
            md5_ok=True, seconds=0,
        )  # fmt: skip
        outcomes.append(outcome)
        if backend == "ours":
            assert after["status"] == "available"
            assert image is None
            assert check in outcome.reason
    _RESULTS[case] = (outcomes[0], outcomes[1])


def test_uploads_side_by_side_within_the_cap(stack: Stack) -> None:
    """Three uploads at once in one cinder-volume whose
    ``[volume_image] max_concurrent_uploads`` is 2: two stream side by
    side, the third waits for a slot.
    """
    volumes = [stack.volume("ours", {KEY: "cheap"}, 384) for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        image_ids = list(pool.map(stack.upload, volumes))
        after = list(pool.map(stack.finish, volumes))
    for volume, image_id, state in zip(volumes, image_ids, after, strict=True):
        assert state["status"] == "available"
        image = stack.image(image_id)
        assert image is not None and image["status"] == "active"
        assert image["stores"] == "cheap"
        assert image["checksum"] == volume.md5
    # the pipeline logs when a slot is taken and when it is given back
    log = stack.stack.service_log("cinder-volume").read_text().splitlines()
    events = []
    for number, line in enumerate(log):
        for image_id in image_ids:
            if f"bytes to image {image_id}," in line:
                events.append((number, +1))
            elif f"image {image_id}: " in line and " bytes in store " in line:
                events.append((number, -1))
    assert len(events) == 6, events
    running = peak = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    assert peak == CAP


def test_store_removed_from_glance(stack: Stack) -> None:
    """The type names ``cheap``; Glance is restarted without it."""
    specs = {KEY: "cheap"}
    prepared = [stack.volume(b, specs) for b in ("upstream", "ours")]
    glance = stack.glance
    glance.stop()
    glance.without = ["cheap"]
    glance.start()
    try:
        outcomes = []
        for volume in prepared:
            outcomes.append(stack.settle(volume, stack.upload(volume)))
    finally:
        glance.stop()
        glance.without = []
        glance.start()
    _RESULTS["store removed from Glance after the type was set"] = (
        outcomes[0],
        outcomes[1],
    )
    ours = outcomes[1]
    assert ours.volume_status == "available"
    assert ours.image == "none left"
    assert "Glance has no store 'cheap' any more" in ours.reason
    assert "Writable stores now: fast" in ours.reason


def test_glance_killed_mid_upload(stack: Stack) -> None:
    """Glance is SIGKILLed once the image is ``saving``, and is back 2 s
    later; the half-written image must not stay behind.
    """
    glance = stack.glance
    outcomes = []
    for backend in ("upstream", "ours"):
        volume = stack.volume(backend, {KEY: "cheap"}, 768)
        image_id = stack.upload(volume)
        # data is flowing once the store holds part of the file
        partial = glance.store_dir("cheap") / image_id
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size > 0:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no data reached the store for image {image_id}")
        glance.kill()
        time.sleep(2)
        glance.start()
        outcomes.append(stack.settle(volume, image_id))
    _RESULTS["Glance killed mid-upload, back 2 s later"] = (
        outcomes[0],
        outcomes[1],
    )
    ours = outcomes[1]
    assert ours.volume_status == "available"
    # never a stuck 'saving' image: deleted, or (if the retry won) active
    # with the right bytes
    assert ours.image in ("none left", "active in cheap, checksum matches")


def test_base_image_ref_comes_from_the_volumes_glance_metadata(
    stack: Stack,
) -> None:
    volume = stack.volume("ours", {KEY: "cheap"}, 1)
    base = "0f0e0d0c-0b0a-4909-8807-060504030201"
    stack.rest.call(
        "POST",
        f"/volumes/{volume.id}/action",
        {"os-set_image_metadata": {"metadata": {"image_id": base}}},
    )
    image_id = stack.upload(volume)
    assert stack.finish(volume)["status"] == "available"
    log = stack.stack.service_log("cinder-volume").read_text()
    assert f"to image {image_id} (raw/bare, base image {base})" in log
    image = stack.image(image_id)
    assert image is not None and image["status"] == "active"


def test_a_base_image_ref_that_is_not_an_image_id_is_not_used(
    stack: Stack,
) -> None:
    """Glance metadata comes from image properties an owner sets: a CR/LF
    there is logged and skipped, and the upload goes on, as without one.
    """
    volume = stack.volume("ours", {KEY: "cheap"}, 1)
    stack.rest.call(
        "POST",
        f"/volumes/{volume.id}/action",
        {"os-set_image_metadata": {"metadata": {"image_id": "x\r\nX-Y: 1"}}},
    )
    image_id = stack.upload(volume)
    assert stack.finish(volume)["status"] == "available"
    log = stack.stack.service_log("cinder-volume").read_text()
    assert "which is not an image id" in log
    assert f"to image {image_id} (raw/bare, base image None)" in log
    image = stack.image(image_id)
    assert image is not None and image["status"] == "active"


def test_colocates_with_a_base_image_in_cheap_only(stack: Stack) -> None:
    """Co-location is on in this stack: a volume whose glance metadata
    names a base image held by ``cheap`` only, and whose type names no
    store, is uploaded to ``cheap``, not to the default store (Glance
    itself ignores Cinder's x-openstack-base-image-ref).
    """
    made = requests.post(
        f"{stack.glance.url}/v2/images",
        json={
            "name": "base",
            "disk_format": "raw",
            "container_format": "bare",
        },
        timeout=30,
    )
    assert made.status_code == 201, made.text
    base = made.json()["id"]
    put = requests.put(
        f"{stack.glance.url}/v2/images/{base}/file",
        data=PATTERN,
        headers={
            "Content-Type": "application/octet-stream",
            "X-Image-Meta-Store": "cheap",
        },
        timeout=60,
    )
    assert put.status_code == 204, put.text
    volume = stack.volume("ours", {}, 4)
    stack.rest.call(
        "POST",
        f"/volumes/{volume.id}/action",
        {"os-set_image_metadata": {"metadata": {"image_id": base}}},
    )
    image_id = stack.upload(volume)
    assert stack.finish(volume)["status"] == "available"
    image = stack.image(image_id)
    assert image is not None and image["status"] == "active"
    assert image["stores"] == "cheap"
    assert image["checksum"] == volume.md5
    log = stack.stack.service_log("cinder-volume").read_text()
    assert (
        f"image {image_id}, co-location with base image {base}: uploaded "
        "to cheap" in log
    )


def test_cases_table_in_docs() -> None:
    """The docs' table is what this run measured (runs last here).

    With every case run, the whole table must match; when only some ran
    (``-k``), each of their rows must match the docs' row.
    """
    assert _RESULTS, "no case of this module ran before this test"
    text = cases.render_table(_RESULTS)
    current = DOC_TABLE.read_text() if DOC_TABLE.exists() else ""
    ran_all = len(_RESULTS) == EXPECTED_ROWS
    if ran_all and os.environ.get("VOLUME_IMAGE_WRITE_DOCS") == "1":
        DOC_TABLE.write_text(text)
        current = text
    if ran_all:
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(True),
                text.splitlines(True),
                "docs",
                "measured",
            )
        )
        assert not diff, diff
        return
    for case, pair in _RESULTS.items():
        row = cases.render_table({case: pair}).split("\n", 7)[7]
        assert row in current, f"docs differ for {case!r}:\n{row}"
