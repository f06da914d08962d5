"""The harness's real Ceph works: two single-node clusters side by side
(one with cephx), rbd pools, and Debian's rados/rbd bindings inside a
server virtualenv (Glance's) without the rest of Debian's packages.

These tests prove the harness (``harness.servers.ceph``), not
volume_image.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import launcher
from harness.servers import ceph

from .conftest import _SERVERS

pytestmark = pytest.mark.functional

#: the pools every site has, as Glance and Cinder will use them
POOLS = ("images", "volumes")


@pytest.fixture(scope="module")
def sites(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ceph.CephCluster]]:
    """``site-a`` (auth none) and ``site-b`` (cephx, with a mgr as
    Cinder's capacity needs), each with :data:`POOLS`, started side by
    side.
    """
    base = tmp_path_factory.mktemp("ceph")
    clusters = {
        "site-a": ceph.CephCluster(base / "site-a", "site-a"),
        "site-b": ceph.CephCluster(
            base / "site-b", "site-b", cephx=True, mgr=True
        ),
    }
    _SERVERS.extend(clusters.values())

    def up(cluster: ceph.CephCluster) -> None:
        cluster.start()
        cluster.pools(*POOLS)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(clusters)) as pool:
            for done in [pool.submit(up, c) for c in clusters.values()]:
                done.result()
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.stop()


@pytest.fixture(scope="module")
def glance_python() -> Path:
    """The Glance virtualenv's python, able to import rados and rbd."""
    venv = launcher.ensure_venv("glance")
    ceph.add_ceph_bindings(venv)
    return venv / "bin" / "python"


#: run by a server venv's python: argv = conf, user, keyring, pool,
#: image, size; writes a pattern, reads it back, snapshots and protects
#: it as Glance's rbd store does; prints what it saw as JSON
RBD_CLIENT = textwrap.dedent(
    """
    import json, sys
    import rados, rbd

    conf, user, keyring, pool, name, size = sys.argv[1:7]
    size = int(size)
    opts = {"keyring": keyring} if keyring else {}
    with rados.Rados(conffile=conf, name=f"client.{user}", conf=opts) as c:
        with c.open_ioctx(pool) as ioctx:
            rbd.RBD().create(ioctx, name, size, old_format=False)
            data = bytes(range(256)) * (size // 256)
            with rbd.Image(ioctx, name) as image:
                image.write(data, 0)
                back = image.read(0, size)
                image.create_snap("snap")
                image.protect_snap("snap")
        fsid = c.get_fsid()
    print(json.dumps({
        "same": back == data,
        "fsid": fsid,
        "rados": rados.__file__,
        "debian_on_path": any("dist-packages" in p for p in sys.path),
    }))
    """
)


def rbd_client(
    python: Path,
    cluster: ceph.CephCluster,
    user: str,
    pool: str,
    image: str,
    size: int = 1024 * 1024,
) -> dict[str, object]:
    keyring = str(cluster.user_keyring(user)) if cluster.cephx else ""
    done = subprocess.run(
        [
            str(python),
            "-c",
            RBD_CLIENT,
            str(cluster.conf_path),
            user,
            keyring,
            pool,
            image,
            str(size),
        ],
        capture_output=True,
        text=True,
        env=cluster.environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_two_clusters_side_by_side(
    sites: dict[str, ceph.CephCluster],
) -> None:
    a, b = sites["site-a"], sites["site-b"]
    assert a.fsid and b.fsid and a.fsid != b.fsid
    assert a.conf_path != b.conf_path
    assert a.port != b.port
    for cluster in (a, b):
        assert f"fsid = {cluster.fsid}" in cluster.conf_path.read_text()
        status, pools = cluster.mon_commands(
            {"prefix": "status"}, {"prefix": "osd pool ls", "detail": "detail"}
        )
        assert status["fsid"] == cluster.fsid
        assert status["osdmap"]["num_up_osds"] == 1
        sizes = {p["pool_name"]: p["size"] for p in pools}
        apps = {p["pool_name"]: p["application_metadata"] for p in pools}
        for pool in POOLS:
            assert sizes[pool] == 1
            assert apps[pool] == {"rbd": {}}
            assert cluster.rbd_ls(pool) == []
    # the mgr's own pool (devicehealth) is the only other one
    assert set(sizes) - set(POOLS) <= {"device_health_metrics"}


def listening(pids: set[int]) -> list[str]:
    """The local addresses ``pids`` listen on (TCP)."""
    out = subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout
    return [
        line.split()[3]
        for line in out.splitlines()
        if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids
    ]


def test_loopback_only(sites: dict[str, ceph.CephCluster]) -> None:
    for cluster in sites.values():
        addresses = listening(set(cluster.pids().values()))
        # mon v2 + v1, the OSD's 8, the mgr's 2
        assert len(addresses) >= 10
        assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
        ports = {int(a.rsplit(":", 1)[1]) for a in addresses}
        assert {cluster.port, cluster.port + 1} <= ports
        assert max(ports) < cluster.port + cluster.PORTS


def test_mgr_reports_capacity(sites: dict[str, ceph.CephCluster]) -> None:
    # Cinder's RBD stats come from `df`: 0 bytes without a mgr
    b = sites["site-b"]
    assert set(b.pids()) == {"mon.a", "osd.0", "mgr.x"}
    stats = json.loads(b.ceph("df", "--format", "json"))["stats"]
    assert stats["total_bytes"] == b.memstore_bytes


def test_cephx_users(sites: dict[str, ceph.CephCluster]) -> None:
    a, b = sites["site-a"], sites["site-b"]
    assert a.keyring_path.read_text() == ""
    assert "auth client required = none" in a.conf_path.read_text()
    assert "auth client required = cephx" in b.conf_path.read_text()
    text = b.keyring_path.read_text()
    for entity in ("client.admin", "client.glance", "client.cinder"):
        assert f"[{entity}]" in text
    assert "[client.glance]" in b.user_keyring("glance").read_text()
    caps = json.loads(
        b.ceph("auth", "get", "client.glance", "--format", "json")
    )[0]["caps"]
    assert caps["mon"] == "profile rbd"
    assert caps["osd"] == "profile rbd pool=images, profile rbd pool=volumes"


def test_rbd_from_a_server_venv(
    sites: dict[str, ceph.CephCluster], glance_python: Path
) -> None:
    a, b = sites["site-a"], sites["site-b"]
    seen_a = rbd_client(glance_python, a, "admin", "images", "img-a")
    seen_b = rbd_client(glance_python, b, "glance", "images", "img-b")
    assert seen_a["fsid"] == a.fsid
    assert seen_b["fsid"] == b.fsid
    for seen in (seen_a, seen_b):
        assert seen["same"] is True
        # the bindings' folder only, none of Debian's dist-packages
        assert str(ceph.ceph_bindings_dir()) in str(seen["rados"])
        assert seen["debian_on_path"] is False
    # each image landed in its own cluster only
    assert a.rbd_ls("images") == ["img-a"]
    assert b.rbd_ls("images") == ["img-b"]
    assert a.rbd_ls("volumes") == b.rbd_ls("volumes") == []
    assert b.rbd_snaps("images", "img-b") == {"snap": True}
    info = a.rbd_info("images", "img-a")
    assert info["size"] == 1024 * 1024
    assert info["parent"] is None


def test_add_ceph_bindings_is_idempotent(glance_python: Path) -> None:
    venv = glance_python.parent.parent
    pth = ceph.add_ceph_bindings(venv)
    mtime = pth.stat().st_mtime_ns
    assert ceph.add_ceph_bindings(venv) == pth
    assert pth.stat().st_mtime_ns == mtime
    assert pth.read_text() == f"{ceph.ceph_bindings_dir()}\n"
    assert list(pth.parent.glob("*ceph*.pth")) == [pth]
    assert sorted(
        p.name.split(".")[0] for p in ceph.ceph_bindings_dir().iterdir()
    ) == ["rados", "rbd"]


def test_stop_ends_every_daemon(sites: dict[str, ceph.CephCluster]) -> None:
    pids = {
        f"{cluster.label} {name}": pid
        for cluster in sites.values()
        for name, pid in cluster.pids().items()
    }
    assert len(pids) == 5  # a mon and an OSD each, site-b's mgr
    for cluster in sites.values():
        cluster.stop()
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), name
    for cluster in sites.values():
        assert cluster.pids() == {}
        assert not list((cluster.base / "run").glob("*.pid"))
