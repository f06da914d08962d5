"""Co-location with the base image against a real Glance 33.

The test Glance has ``fast`` (file, default), ``cheap`` (file), ``web``
(http, read-only) and the reserved staging and tasks stores.  devauth
makes every request admin unless it sends its own ``X-Roles``; a member
is refused copy-image (403) by Glance's default policy.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import launcher
from volume_image import config, errors
from volume_image.cli import main as cli
from volume_image.clients import glance
from volume_image.core import placement
from volume_image.pipeline import copy_image
from volume_image.pipeline import uploader as upload

from .conftest import count_requests, make_client

pytestmark = pytest.mark.functional

MiB = 1024 * 1024
MEMBER = {
    "X-Roles": "member,reader",
    "X-Project-Id": "volume-image-test-project",
    "X-User-Id": "plain-member",
}


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 MiB of random data."""
    path = tmp_path_factory.mktemp("coloc") / "volume.raw"
    path.write_bytes(os.urandom(8 * MiB))
    return path


class Api:
    """Raw Glance requests, to set the scene the way an operator would."""

    def __init__(self, url: str) -> None:
        self.url = url

    def create(self, name: str, **extra: Any) -> str:
        resp = requests.post(
            f"{self.url}/v2/images",
            json={
                "name": name,
                "disk_format": "raw",
                "container_format": "bare",
                **extra,
            },
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def put(self, image_id: str, data: bytes, store: str) -> None:
        resp = requests.put(
            f"{self.url}/v2/images/{image_id}/file",
            data=data,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Image-Meta-Store": store,
            },
            timeout=60,
        )
        assert resp.status_code == 204, resp.text

    def copy(self, image_id: str, stores: list[str]) -> int:
        resp = requests.post(
            f"{self.url}/v2/images/{image_id}/import",
            json={"method": {"name": "copy-image"}, "stores": stores},
            timeout=30,
        )
        return resp.status_code

    def image(self, image_id: str) -> dict[str, Any]:
        resp = requests.get(f"{self.url}/v2/images/{image_id}", timeout=30)
        resp.raise_for_status()
        return dict(resp.json())

    def wait(self, image_id: str, timeout: float = 60) -> dict[str, Any]:
        """Until no import holds the image."""
        end = time.monotonic() + timeout
        while True:
            image = self.image(image_id)
            if not image.get("os_glance_import_task"):
                return image
            assert time.monotonic() < end, image
            time.sleep(0.1)

    def base(self, stores: Iterable[str], data: bytes) -> str:
        """A base image in ``stores`` (uploaded to the first, copied)."""
        first, *rest = stores
        image_id = self.create("base")
        self.put(image_id, data, first)
        if rest:
            assert self.copy(image_id, rest) == 202
            image = self.wait(image_id)
            assert set(image["stores"].split(",")) == {first, *rest}
        return image_id


@pytest.fixture(scope="module")
def api(glance_server: launcher.GlanceServer) -> Api:
    return Api(glance_server.url)


def uploader(
    url: str, copy_headers: dict[str, str] | None = None, **settings: Any
) -> upload.Uploader:
    return upload.Uploader(
        make_client(url),
        config.Settings(colocate_with_base_image=True, **settings),
        copy_client=make_client(url, copy_headers) if copy_headers else None,
    )


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_lands_in_every_store_of_the_base_image(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    base = api.base(["cheap", "fast"], os.urandom(MiB))
    result = uploader(glance_server.url).upload(
        volume, upload.ImageMeta("co-both"), base_image_ref=base
    )
    placed = result.colocation
    assert placed is not None
    # fast is Glance's default store: the upload goes there
    assert result.store == placed.uploaded_to == "fast"
    assert [(c.store, c.status, c.verified) for c in placed.copies] == [
        ("cheap", placement.COPIED, True)
    ]
    assert placed.complete and "copied to cheap" in placed.summary()
    image = api.image(result.image_id)
    assert sorted(image["stores"].split(",")) == ["cheap", "fast"]
    assert image["os_hash_value"] == result.os_hash_value
    for store in ("fast", "cheap"):
        assert md5(glance_server.store_dir(store) / result.image_id) == md5(
            volume
        )
    # the copy's staging file is gone
    assert not (glance_server.base / "staging" / result.image_id).exists()


def test_base_in_cheap_only_uploads_there_and_copies_nothing(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    base = api.base(["cheap"], os.urandom(MiB))
    result = uploader(glance_server.url).upload(
        volume, upload.ImageMeta("co-cheap"), base_image_ref=base
    )
    assert result.store == "cheap" and result.verified
    assert result.colocation is not None
    assert result.colocation.copies == ()
    assert api.image(result.image_id)["stores"] == "cheap"
    assert not (glance_server.store_dir("fast") / result.image_id).exists()
    # nothing was asked of copy-image for it
    assert (
        count_requests(glance_server, f"/v2/images/{result.image_id}/import")
        == 0
    )


def test_explicit_store_wins(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    base = api.base(["fast", "cheap"], os.urandom(MiB))
    result = uploader(glance_server.url).upload(
        volume,
        upload.ImageMeta("co-explicit"),
        extra_specs={"image_service:store_id": "cheap"},
        base_image_ref=base,
    )
    assert result.store == "cheap"
    assert result.colocation is not None
    assert result.colocation.copies == ()
    assert "named explicitly" in result.colocation.reason
    assert api.image(result.image_id)["stores"] == "cheap"


def test_unknown_base_image_goes_to_the_default_store(
    glance_server: launcher.GlanceServer, volume: Path
) -> None:
    missing = "0b9f1e0a-52e4-4b45-8c8f-3b3bb2c9a001"
    result = uploader(glance_server.url).upload(
        volume, upload.ImageMeta("co-unknown"), base_image_ref=missing
    )
    assert result.store == "fast"
    assert result.colocation is not None
    assert "was not found" in result.colocation.reason
    assert "default store" in result.colocation.reason


def test_not_permitted_is_reported_not_failed(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    base = api.base(["fast", "cheap"], os.urandom(MiB))
    result = uploader(glance_server.url, copy_headers=MEMBER).upload(
        volume, upload.ImageMeta("co-member"), base_image_ref=base
    )
    assert result.colocation is not None
    (copy,) = result.colocation.copies
    assert copy.status == placement.NOT_PERMITTED
    assert "403" in copy.reason and "copy_image" in copy.reason
    assert (
        result.colocation.summary()
        == "uploaded to fast; not copied to cheap: not permitted"
    )
    assert api.image(result.image_id)["stores"] == "fast"


def test_not_permitted_fails_in_strict_mode_and_deletes(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    base = api.base(["fast", "cheap"], os.urandom(MiB))
    up = uploader(glance_server.url, copy_headers=MEMBER, colocate_strict=True)
    with pytest.raises(errors.ColocationError) as info:
        up.upload(volume, upload.ImageMeta("co-strict"), base_image_ref=base)
    assert "not permitted" in str(info.value)
    image_id = info.value.image_id
    assert image_id is not None
    resp = requests.get(
        f"{glance_server.url}/v2/images/{image_id}", timeout=30
    )
    assert resp.status_code == 404


class Recording(glance.GlanceClient):
    """A client that remembers Glance's answers to copy requests."""

    answers: list[tuple[list[str], int, str]]

    def request_copy(
        self, image_id: str, store_ids: Iterable[str]
    ) -> glance.CopyAnswer:
        ids = list(store_ids)
        answer = super().request_copy(image_id, ids)
        self.answers.append((ids, answer.status, answer.message))
        return answer


def recording(url: str) -> Recording:
    client = make_client(url)
    rec = Recording(client.adapter)
    rec.answers = []
    return rec


def test_trap_target_already_holds_the_image(
    glance_server: launcher.GlanceServer, api: Api
) -> None:
    image_id = api.base(["fast"], os.urandom(MiB))
    client = recording(glance_server.url)
    copies, image = copy_image.copy_to_stores(
        client, image_id, ["fast", "cheap"], timeout=60
    )
    # Glance refuses the whole request for the store it holds (400); the
    # store is counted as copied and the rest asked for again
    assert client.answers[0][1:] == (
        400,
        "Image is already present at store 'fast'",
    )
    assert client.answers[1][:2] == (["cheap"], 202)
    assert [(c.store, c.status) for c in copies] == [
        ("fast", placement.COPIED),
        ("cheap", placement.COPIED),
    ]
    assert sorted(image["stores"].split(",")) == ["cheap", "fast"]


def test_trap_copy_already_running(
    glance_server: launcher.GlanceServer, api: Api
) -> None:
    image_id = api.base(["fast"], os.urandom(64 * MiB))
    # someone else's copy holds the image's import lock
    assert api.copy(image_id, ["cheap"]) == 202
    client = recording(glance_server.url)
    copies, image = copy_image.copy_to_stores(
        client, image_id, ["cheap"], timeout=120
    )
    assert client.answers[0][1:] == (409, "Image has active task")
    # waited for it, then judged from the image: the other copy did it
    assert [(c.store, c.status) for c in copies] == [
        ("cheap", placement.COPIED)
    ]
    assert len(client.answers) == 1
    assert sorted(image["stores"].split(",")) == ["cheap", "fast"]


def test_trap_readonly_and_reserved_targets_fail_when_asked(
    glance_server: launcher.GlanceServer, api: Api
) -> None:
    """What the plan prevents: Glance accepts copies to ``web`` and to a
    reserved store (202), and they fail later; the task still says
    success.  Judged from the image, they are failures.
    """
    image_id = api.base(["fast"], os.urandom(MiB))
    client = recording(glance_server.url)
    copies, image = copy_image.copy_to_stores(
        client, image_id, ["web", "os_glance_staging_store"], timeout=60
    )
    assert client.answers[0][1] == 202
    assert [(c.store, c.status) for c in copies] == [
        ("web", placement.FAILED),
        ("os_glance_staging_store", placement.FAILED),
    ]
    assert all("os_glance_failed_import" in c.reason for c in copies)
    assert image["stores"] == "fast"


def test_trap_readonly_and_reserved_are_never_requested(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    """A base image whose stores list read-only and reserved ids (as
    Glance would list a web-store location) gets copies only to the
    writable ones: the plan runs on Glance's real catalog.
    """
    catalog = make_client(glance_server.url).get_store_catalog()
    plan = placement.plan_targets(
        "base",
        {"stores": "web,os_glance_staging_store,cheap,os_glance_tasks_store"},
        catalog,
    )
    assert plan.upload_store == "cheap" and plan.copy_to == ()
    assert dict(plan.skipped) == {
        "web": "read-only",
        "os_glance_staging_store": "reserved for Glance's own use",
        "os_glance_tasks_store": "reserved for Glance's own use",
    }


def test_trap_stale_staging_file(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    """A leftover ``staging/<id>`` of the right size is reused by
    copy-image without reading the source: the copy fails on the hash
    check, leaves its target file behind, and the image stays intact.
    """
    base = api.base(["fast", "cheap"], os.urandom(MiB))
    image_id = api.create("co-stale")
    staged = glance_server.base / "staging" / image_id
    staged.write_bytes(os.urandom(volume.stat().st_size))
    result = uploader(glance_server.url).upload(
        volume,
        image_id=image_id,
        base_image_ref=base,
    )
    assert result.store == "fast" and result.verified
    assert result.colocation is not None
    (copy,) = result.colocation.copies
    assert copy.status == placement.FAILED
    # Glance's API gives no cause: the task says it copied
    assert "os_glance_failed_import" in copy.reason
    assert "the copy task said 'Copied 8 MiB'" in copy.reason
    assert "stale file" in copy.reason
    image = api.image(image_id)
    assert image["stores"] == "fast"
    assert image["os_hash_value"] == result.os_hash_value
    # the orphan that makes every retry fail ("Duplicate")
    orphan = glance_server.store_dir("cheap") / image_id
    assert orphan.exists() and md5(orphan) != md5(volume)
    again, _ = copy_image.copy_to_stores(
        make_client(glance_server.url), image_id, ["cheap"], timeout=60
    )
    assert again[0].status == placement.FAILED
    assert "stale file" in again[0].reason
    # what an operator does by hand; then the copy works
    orphan.unlink()
    staged.unlink(missing_ok=True)
    fixed, image = copy_image.copy_to_stores(
        make_client(glance_server.url), image_id, ["cheap"], timeout=60
    )
    assert fixed[0].status == placement.COPIED
    assert md5(orphan) == md5(volume)


def test_cli_reports_each_store(
    glance_server: launcher.GlanceServer, api: Api, volume: Path
) -> None:
    base = api.base(["cheap", "fast"], os.urandom(MiB))
    common = ["--os-auth-type", "none", "--os-endpoint", glance_server.url]
    args = [*common, "upload", str(volume), "--name", "co-cli"]
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [*args, "--base-image", base, "-f", "json"], out=out, err=err
    )
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["store"] == "fast"
    assert doc["colocation"]["copies"] == [
        {"store": "cheap", "status": "copied", "reason": "", "verified": True}
    ]
    assert doc["colocation"]["complete"] is True
    out = io.StringIO()
    assert cli.main([*args, "--base-image", base], out=out, err=err) == 0
    text = out.getvalue()
    assert f"co-location with base image {base}:" in text
    assert "uploaded to fast; copied to cheap" in text
    lines = [line.split() for line in text.splitlines()]
    assert ["cheap", "copied", "yes"] in lines
    # without --base-image: no co-location, one store
    out = io.StringIO()
    assert cli.main([*args, "-f", "json"], out=out, err=err) == 0
    assert json.loads(out.getvalue())["colocation"] is None
