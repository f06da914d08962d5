"""The same-cluster fast path's steps and cleanup, on a fake Ceph (the
real one is in tests/functional/test_ceph_real.py): what is made is
removed on every failure, in the order that cannot fail on a child.
"""

from __future__ import annotations

import types
from typing import Any

import pytest
import requests_mock

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import direct

from .conftest import URL

FSID = "f5d"
IMG = URL + "/v2/images/i1"


class RbdError(Exception):
    pass


class PermissionError_(RbdError):
    pass


class ImageNotFound(RbdError):
    pass


class InvalidArgument(RbdError):
    pass


class FakeCeph:
    """Pools of images, each with its snapshots (name -> protected) and
    parent; records every call.
    """

    def __init__(self) -> None:
        self.images: dict[tuple[str, str], dict[str, Any]] = {
            ("volumes", "volume-1"): {"snaps": {}, "parent": None}
        }
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}

    def op(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)


def fake_cinder_rbd(ceph: FakeCeph) -> types.ModuleType:
    mod = types.ModuleType("cinder.volume.drivers.rbd")

    class Image:
        def __init__(self, driver: Any, name: str, pool: str | None = None):
            self.key = (pool or "volumes", name)
            if self.key not in ceph.images:
                raise ImageNotFound(name)
            self.rec = ceph.images[self.key]

        def __enter__(self) -> Image:
            return self

        def __exit__(self, *a: Any) -> None:
            pass

        def create_snap(self, snap: str) -> None:
            ceph.op(f"snap {self.key[1]}@{snap}")
            self.rec["snaps"][snap] = False

        def protect_snap(self, snap: str) -> None:
            ceph.op(f"protect {self.key[1]}@{snap}")
            self.rec["snaps"][snap] = True

        def unprotect_snap(self, snap: str) -> None:
            ceph.op(f"unprotect {self.key[1]}@{snap}")
            children = [
                k
                for k, v in ceph.images.items()
                if v["parent"] == (self.key, snap)
            ]
            if children:
                raise RbdError("busy")
            self.rec["snaps"][snap] = False

        def remove_snap(self, snap: str) -> None:
            ceph.op(f"rmsnap {self.key[1]}@{snap}")
            del self.rec["snaps"][snap]

        def list_snaps(self) -> list[dict[str, str]]:
            return [{"name": s} for s in self.rec["snaps"]]

        def parent_info(self) -> Any:
            if self.rec["parent"] is None:
                raise ImageNotFound("no parent")
            return self.rec["parent"]

    class Client:
        cluster: Any = None  # a test sets a fake ceph-mgr here

        def __init__(self, driver: Any, pool: str) -> None:
            self.ioctx = pool
            self.features = 1

        def __enter__(self) -> Client:
            return self

        def __exit__(self, *a: Any) -> None:
            pass

    mod.RBDVolumeProxy = Image  # type: ignore[attr-defined]
    mod.RADOSClient = Client  # type: ignore[attr-defined]
    return mod


class FakeDriver:
    def __init__(self, ceph: FakeCeph) -> None:
        self.ceph = ceph
        self.configuration = types.SimpleNamespace(rbd_pool="volumes")
        self.rbd = types.SimpleNamespace(
            Error=RbdError,
            PermissionError=PermissionError_,
            ImageNotFound=ImageNotFound,
            InvalidArgument=InvalidArgument,
        )
        self.rados = types.SimpleNamespace(Error=OSError)

    def RBDProxy(self) -> Any:
        ceph = self.ceph

        class Proxy:
            def clone(
                self,
                src: str,
                name: str,
                snap: str,
                dst: str,
                dst_name: str,
                features: int,
            ) -> None:
                ceph.op(f"clone {name}@{snap} {dst}/{dst_name}")
                ceph.images[(dst, dst_name)] = {
                    "snaps": {},
                    "parent": ((src, name), snap),
                }

            def remove(self, pool: str, name: str) -> None:
                ceph.op(f"remove {pool}/{name}")
                del ceph.images[(pool, name)]

        return Proxy()

    def _do_flatten(self, name: str, pool: str) -> None:
        self.ceph.op(f"flatten {pool}/{name}")
        self.ceph.images[(pool, name)]["parent"] = None


@pytest.fixture
def ceph(monkeypatch: pytest.MonkeyPatch) -> FakeCeph:
    fake = FakeCeph()
    from volume_image.cinder import rbd_direct

    module = fake_cinder_rbd(fake)
    monkeypatch.setattr(rbd_direct, "_cinder_rbd", lambda: module)
    return fake


DECISION = direct.Decision(True, "same", "fast", "images", FSID)
SETTINGS = config.Settings(rbd_direct_flatten="local", rbd_direct_timeout=5)
VOLUME = types.SimpleNamespace(name="volume-1", id="v1")


def run(client: glance.GlanceClient, ceph: FakeCeph) -> Any:
    from volume_image.cinder import rbd_direct

    return rbd_direct.upload(
        FakeDriver(ceph),
        VOLUME,
        "i1",
        DECISION,
        client,
        SETTINGS,  # type: ignore[arg-type]
        sleep=lambda s: None,
    )


def test_the_steps_make_glance_stores_shape(
    ceph: FakeCeph, client: glance.GlanceClient, rmock: requests_mock.Mocker
) -> None:
    rmock.post(IMG + "/locations", status_code=202)
    rmock.get(
        IMG,
        [
            {"json": {"status": "queued", "os_glance_import_task": "t"}},
            {"json": {"status": "active", "size": 5}},
        ],
    )
    result = run(client, ceph)
    assert result["volume_image_flatten"] == "local"
    assert ceph.calls == [
        "snap volume-1@volume_image-i1",
        "protect volume-1@volume_image-i1",
        "clone volume-1@volume_image-i1 images/i1",
        "flatten images/i1",
        "unprotect volume-1@volume_image-i1",
        "rmsnap volume-1@volume_image-i1",
        "snap i1@snap",
        "protect i1@snap",
    ]
    assert ceph.images[("images", "i1")] == {
        "snaps": {"snap": True},
        "parent": None,
    }
    assert ceph.images[("volumes", "volume-1")]["snaps"] == {}
    assert rmock.request_history[0].json() == {
        "url": f"rbd://{FSID}/images/i1/snap"
    }


@pytest.mark.parametrize(
    "failing",
    [
        "clone volume-1@volume_image-i1 images/i1",
        "flatten images/i1",
        "snap i1@snap",
    ],
)
def test_a_ceph_failure_leaves_nothing(
    ceph: FakeCeph, client: glance.GlanceClient, failing: str
) -> None:
    ceph.fail[failing] = RbdError("cluster gone")
    with pytest.raises(errors.UploadError) as info:
        run(client, ceph)
    assert "store fast (Ceph cluster f5d, pool images)" in str(info.value)
    assert "cluster gone" in str(info.value)
    assert set(ceph.images) == {("volumes", "volume-1")}
    assert ceph.images[("volumes", "volume-1")]["snaps"] == {}


def test_missing_caps_fall_back_and_name_the_cap(
    ceph: FakeCeph, client: glance.GlanceClient
) -> None:
    from volume_image.cinder import rbd_direct

    ceph.fail["clone volume-1@volume_image-i1 images/i1"] = PermissionError_(
        "EPERM"
    )
    with pytest.raises(rbd_direct.Fallback) as info:
        run(client, ceph)
    assert "profile rbd pool=images" in str(info.value)
    assert set(ceph.images) == {("volumes", "volume-1")}


@pytest.mark.parametrize(
    ("status", "hint"),
    [(403, "service role"), (404, "location API"), (405, "location API")],
)
def test_a_refused_location_falls_back_and_removes_the_image(
    ceph: FakeCeph,
    client: glance.GlanceClient,
    rmock: requests_mock.Mocker,
    status: int,
    hint: str,
) -> None:
    from volume_image.cinder import rbd_direct

    rmock.post(IMG + "/locations", status_code=status, json={"message": "no"})
    with pytest.raises(rbd_direct.Fallback) as info:
        run(client, ceph)
    assert hint in str(info.value)
    assert set(ceph.images) == {("volumes", "volume-1")}


def test_a_location_glance_reverts_fails_with_its_reason(
    ceph: FakeCeph, client: glance.GlanceClient, rmock: requests_mock.Mocker
) -> None:
    rmock.post(IMG + "/locations", status_code=202)
    rmock.get(
        IMG,
        [
            {"json": {"status": "queued", "os_glance_import_task": "t"}},
            {"json": {"status": "queued"}},
        ],
    )
    rmock.get(
        IMG + "/tasks",
        json={
            "tasks": [
                {"type": "location_import", "message": "Invalid location"}
            ]
        },
    )
    with pytest.raises(errors.UploadError, match="Invalid location"):
        run(client, ceph)
    assert set(ceph.images) == {("volumes", "volume-1")}


class FakeMgr:
    """ceph-mgr's rbd_support: a flatten task that takes two polls."""

    def __init__(self, ceph: FakeCeph, refuse: bool = False) -> None:
        self.ceph, self.refuse, self.polls = ceph, refuse, 0
        self.commands: list[str] = []

    def mgr_command(
        self, cmd: str, inbuf: bytes, timeout: int
    ) -> tuple[int, bytes, str]:
        import json

        doc = json.loads(cmd)
        self.commands.append(doc["prefix"])
        if self.refuse:
            return -13, b"", "access denied"
        if doc["prefix"] == "rbd task add flatten":
            pool, name = doc["image_spec"].split("/")
            self.spec = (pool, name)
            return 0, b'{"id": "t1"}', ""
        self.polls += 1
        if self.polls < 2:
            return 0, b'[{"id": "t1", "progress": 0.5}]', ""
        self.ceph.images[self.spec]["parent"] = None
        return 0, b"[]", ""


@pytest.mark.parametrize("refuse", [False, True])
def test_the_mgr_flattens_or_cinder_volume_does(
    ceph: FakeCeph,
    client: glance.GlanceClient,
    rmock: requests_mock.Mocker,
    monkeypatch: pytest.MonkeyPatch,
    refuse: bool,
) -> None:
    from volume_image.cinder import rbd_direct

    mgr = FakeMgr(ceph, refuse)
    module = rbd_direct._cinder_rbd()
    monkeypatch.setattr(module.RADOSClient, "cluster", mgr, raising=False)
    rmock.post(IMG + "/locations", status_code=202)
    rmock.get(
        IMG, json={"status": "active", "checksum": "c", "os_hash_value": "h"}
    )
    result = rbd_direct.upload(
        FakeDriver(ceph),
        VOLUME,
        "i1",
        DECISION,
        client,  # type: ignore[arg-type]
        config.Settings(rbd_direct_flatten="mgr", rbd_direct_timeout=5),
        sleep=lambda s: None,
    )
    assert result["volume_image_flatten"] == ("local" if refuse else "mgr")
    assert ("flatten images/i1" in ceph.calls) is refuse
    assert ceph.images[("images", "i1")]["parent"] is None
    if not refuse:
        assert mgr.commands == ["rbd task add flatten"] + ["rbd task list"] * 2


def test_a_killed_upload_is_undone_at_the_next_start(
    ceph: FakeCeph,
    client: glance.GlanceClient,
    rmock: requests_mock.Mocker,
    tmp_path: Any,
) -> None:
    """cinder-volume killed during the flatten: the journal names what
    was made, and recover() removes it; an upload Glance had taken is
    left to Glance.
    """
    from volume_image.cinder import rbd_direct

    class Killed(BaseException):
        pass

    driver = FakeDriver(ceph)

    def killed(name: str, pool: str) -> None:
        raise Killed  # no except clause of the upload runs for it...

    driver._do_flatten = killed  # type: ignore[method-assign]
    undo = rbd_direct._Work.undo
    rbd_direct._Work.undo = lambda self: None  # type: ignore[method-assign]
    try:  # ...as with a SIGKILL: nothing is undone
        with pytest.raises(Killed):
            rbd_direct.upload(
                driver,
                VOLUME,
                "i1",
                DECISION,
                client,
                SETTINGS,  # type: ignore[arg-type]
                journal_dir=tmp_path,
                sleep=lambda s: None,
            )
    finally:
        rbd_direct._Work.undo = undo  # type: ignore[method-assign]
    assert ("images", "i1") in ceph.images
    assert list(tmp_path.glob("*.json"))
    (tmp_path / "i2.json").write_text(
        '{"phase": "glance", "volume": "volume-1", "pool": "volumes", '
        '"dst_pool": "images", "image": "i2"}'
    )
    ceph.images[("images", "i2")] = {"snaps": {"snap": True}, "parent": None}
    assert rbd_direct.recover(FakeDriver(ceph), tmp_path) == 1
    assert set(ceph.images) == {("volumes", "volume-1"), ("images", "i2")}
    assert ceph.images[("volumes", "volume-1")]["snaps"] == {}
    assert not list(tmp_path.glob("*.json"))
