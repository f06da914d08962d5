"""A real, throw-away Ceph for the harness: Debian's Ceph 16 (pacific) as
plain processes of ours on 127.0.0.1, for Glance's and Cinder's rbd
drivers.

A :class:`CephCluster` is one mon, one OSD on **memstore** (the data is
in the OSD's memory and gone when it stops) and, optionally, a mgr, with
its own fsid, ports, conf file and keyring under its base directory.
Several run side by side (two "sites").  Daemons run in the foreground
in their own session and are stopped by the PIDs we started, never by
name.

The Ceph Python bindings (``rados``, ``rbd``) are Debian's
python3-rados/python3-rbd; :func:`add_ceph_bindings` lets a server
virtualenv import them (and nothing else of Debian's dist-packages).
Cluster administration (the OSD's registration, pools, users, the
``rbd_*`` helpers) runs in a short-lived ``/usr/bin/python3`` with those
bindings: the interpreter they were built for, one connection per call
instead of a ``ceph`` CLI process per command.

Command line (until Ctrl-C)::

    python -m harness.servers.ceph DIR [--cephx] [--mgr] [POOL ...]
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the generic helpers of the harness, and nothing else of it
from harness.servers.base import Server, _apt_install, _say, cache_dir

__all__ = [
    "CEPH_PACKAGES",
    "CephCluster",
    "add_ceph_bindings",
    "ceph_bindings_dir",
    "cephx_key",
    "ensure_ceph",
    "port_block",
]

#: where Debian's python3-rados and python3-rbd put their modules
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")

#: the interpreter Debian's bindings are built for (python3-rados depends
#: on it); runs the admin helper
SYSTEM_PYTHON = "/usr/bin/python3"

#: Debian package -> a file (glob) it installs; all present: installed
CEPH_PACKAGES: dict[str, str] = {
    "ceph-mon": "/usr/bin/ceph-mon",
    "ceph-osd": "/usr/bin/ceph-osd",
    "ceph-mgr": "/usr/bin/ceph-mgr",
    "ceph-common": "/usr/bin/rbd",
    "python3-rados": str(DIST_PACKAGES / "rados.cpython-*.so"),
    "python3-rbd": str(DIST_PACKAGES / "rbd.cpython-*.so"),
}

#: Debian's mgr modules (Python)
MGR_MODULE_PATH = Path("/usr/share/ceph/mgr")

GiB = 1024**3

_BINDINGS = ("rados", "rbd")


def _missing_packages() -> list[str]:
    return [
        package
        for package, path in CEPH_PACKAGES.items()
        if not glob.glob(path)
    ]


_ENSURE_LOCK = threading.Lock()


def ensure_ceph() -> None:
    """Install Debian's Ceph (mon, OSD, mgr, CLI, Python bindings) when a
    part of it is missing and we are root; when all is there it only
    looks for six files.

    The harness's apt helper installs one package per call (each after an
    ``apt-get update``): ``ceph-mon`` brings ceph-common and the bindings
    along, so a fresh machine needs three calls (mon, osd, mgr), about
    45 s.  The packages' postinst starts no daemon here (no systemd), but
    it brings ``sudo`` along.

    :raises RuntimeError: we are not root, or a part is still missing.
    """
    if not _missing_packages():
        return
    with _ENSURE_LOCK:  # clusters started side by side
        for package in CEPH_PACKAGES:
            # re-checked each time: an earlier package may have brought it
            if package in _missing_packages():
                _apt_install(package)
    missing = _missing_packages()
    if missing:
        raise RuntimeError(f"Ceph packages still missing: {missing}")


# -- the Python bindings in server virtualenvs ------------------------------


def ceph_bindings_dir() -> Path:
    """A folder holding only symlinks to Debian's ``rados`` and ``rbd``
    extension modules (made if needed, under :func:`cache_dir`).

    Put on a ``sys.path`` (:func:`add_ceph_bindings`), it makes the two
    importable without the 150-odd other Debian packages of
    ``dist-packages`` (old requests, urllib3, webob...) that a
    ``--system-site-packages`` venv or a ``.pth`` naming dist-packages
    would put behind the venv's own.  The modules link only against
    librados2/librbd1, so the symlinks are enough.

    :raises RuntimeError: the bindings are not installed.
    """
    folder = cache_dir() / "ceph-bindings"
    folder.mkdir(parents=True, exist_ok=True)
    for module in _BINDINGS:
        found = sorted(DIST_PACKAGES.glob(f"{module}.cpython-*.so"))
        if not found:
            raise RuntimeError(
                f"no {module} module in {DIST_PACKAGES}: run ensure_ceph()"
            )
        link = folder / found[-1].name
        if link.is_symlink() and os.readlink(link) == str(found[-1]):
            continue
        # atomic: a concurrent caller sees the old link or the new one
        tmp = folder / f".{link.name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(found[-1])
        os.replace(tmp, link)
    return folder


#: the .pth file :func:`add_ceph_bindings` writes into a venv
BINDINGS_PTH = "volume-image-ceph-bindings.pth"


def add_ceph_bindings(venv: Path) -> Path:
    """Let ``venv``'s Python import ``rados`` and ``rbd``; return the
    ``.pth`` file that does it.

    The file goes into the venv's site-packages and names
    :func:`ceph_bindings_dir`.  This changes the harness's *cached*
    server venvs in place rather than copying them (a copy costs ~2 s and
    300 MB each): it is idempotent (written only when its text differs),
    adds a path holding nothing but the two modules, so it is harmless to
    every server that does not import them, and the venv's cache key
    (the pins and the Python version) still says what it holds.

    :raises RuntimeError: the venv's Python is not the one the modules
        were built for (their ``cpython-3XY`` tag).
    """
    folder = ceph_bindings_dir()
    sites = sorted(Path(venv).glob("lib/python3.*/site-packages"))
    if len(sites) != 1:
        raise RuntimeError(f"no single site-packages in {venv}: {sites}")
    site = sites[0]
    version = site.parent.name.removeprefix("python").replace(".", "")
    for so in folder.glob("*.so"):
        if not so.name.split(".")[1].startswith(f"cpython-{version}"):
            raise RuntimeError(
                f"{so.name} is not for {site.parent.name} of {venv}"
            )
    pth = site / BINDINGS_PTH
    text = f"{folder}\n"
    if not pth.exists() or pth.read_text() != text:
        tmp = site / f".{BINDINGS_PTH}.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, pth)
    return pth


# -- cephx keys and ports ---------------------------------------------------


def cephx_key() -> str:
    """A new cephx secret, as ``ceph-authtool --gen-key`` makes it: type
    AES (1), creation time, then 16 random bytes, base64.
    """
    now = time.time()
    secret = os.urandom(16)
    blob = struct.pack("<HIIH", 1, int(now), int(now % 1 * 1e9), len(secret))
    return base64.b64encode(blob + secret).decode()


def _keyring_entry(entity: str, key: str, caps: dict[str, str]) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {kind} = "{cap}"' for kind, cap in caps.items()]
    return "\n".join(lines) + "\n"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_PORT_LOCK = threading.Lock()
#: blocks handed out in this process (not bound before their daemons run)
_PORTS_TAKEN: set[int] = set()


def port_block(count: int) -> int:
    """The first of ``count`` consecutive ports on 127.0.0.1 that are all
    free now and not handed out before by this process.

    The block is picked at random *below* the kernel's ephemeral range
    (``ip_local_port_range``), so neither the Ceph clients' nor any other
    process's outgoing connections nor the harness's
    :func:`~harness.launcher.free_port` take one of its ports before our
    daemons bind them.
    """
    try:
        low = int(
            Path("/proc/sys/net/ipv4/ip_local_port_range")
            .read_text()
            .split()[0]
        )
    except (OSError, ValueError, IndexError):
        low = 32768
    first, last = 20000, low - count
    if last <= first:
        raise RuntimeError(f"no room for {count} ports below {low}")
    rng = random.SystemRandom()
    with _PORT_LOCK:
        for _ in range(200):
            base = rng.randrange(first, last)
            block = range(base, base + count)
            if _PORTS_TAKEN.intersection(block):
                continue
            if all(_port_free(port) for port in block):
                _PORTS_TAKEN.update(block)
                return base
    raise RuntimeError(f"no {count} free consecutive ports in {first}-{low}")


# -- the admin helper ------------------------------------------------------

#: Run by Debian's python3 (whose dist-packages have rados and rbd):
#: ``argv[1]`` the conf file, stdin a JSON list of operations, stdout a
#: JSON list of their results.  One connection for all of them.
_ADMIN = r"""
import json, sys, time
import rados, rbd

conf, timeout = sys.argv[1], float(sys.argv[2])
ops = json.load(sys.stdin)
cluster = rados.Rados(conffile=conf, name="client.admin",
                      conf={"client_mount_timeout": str(int(timeout))})
cluster.connect(timeout=timeout)
deadline = time.monotonic() + timeout


def mon(cmd, check=True):
    ret, out, err = cluster.mon_command(json.dumps(cmd), b"",
                                        timeout=timeout)
    if ret and check:
        raise RuntimeError(f"{cmd['prefix']}: {ret} {err}")
    return ret, out, err


def osd_up(osd):
    while True:
        _, out, _ = mon({"prefix": "osd dump", "format": "json"})
        if any(o["osd"] == osd and o["up"] for o in json.loads(out)["osds"]):
            return True
        if time.monotonic() > deadline:
            raise RuntimeError(f"osd.{osd} not up within {timeout}s")
        time.sleep(0.05)


def mgr_available():
    while True:
        _, out, _ = mon({"prefix": "mgr stat", "format": "json"})
        if json.loads(out).get("available"):
            return True
        if time.monotonic() > deadline:
            raise RuntimeError(f"no mgr available within {timeout}s")
        time.sleep(0.1)


def pools(names, pg_num):
    for name in names:
        mon({"prefix": "osd pool create", "pool": name, "pg_num": pg_num,
             "pgp_num": pg_num, "pool_type": "replicated"})
        mon({"prefix": "osd pool application enable", "pool": name,
             "app": "rbd"})
    # rbd pool init writes to the pool: it returns once its PGs are
    # active (no mgr needed)
    for name in names:
        with cluster.open_ioctx(name) as ioctx:
            rbd.RBD().pool_init(ioctx, False)
    return names


def ls(pool):
    with cluster.open_ioctx(pool) as ioctx:
        return sorted(rbd.RBD().list(ioctx))


def info(pool, image):
    with cluster.open_ioctx(pool) as ioctx:
        with rbd.Image(ioctx, image, read_only=True) as img:
            try:
                parent = img.get_parent_image_spec()
            except rbd.ImageNotFound:
                parent = None
            return {
                "size": img.size(),
                "parent": parent,
                "snaps": {s["name"]: img.is_protected_snap(s["name"])
                          for s in img.list_snaps()},
            }


def fill(pool, image, length, seed):
    # a seeded pattern at the head; the md5 of the whole image back
    import hashlib, random
    rng = random.Random(seed)
    with cluster.open_ioctx(pool) as ioctx:
        with rbd.Image(ioctx, image) as img:
            done = 0
            while done < length:
                n = min(1 << 20, length - done)
                img.write(rng.randbytes(n), done)
                done += n
            img.flush()
            md5 = hashlib.md5()
            size, offset = img.size(), 0
            while offset < size:
                n = min(4 << 20, size - offset)
                md5.update(img.read(offset, n))
                offset += n
            return md5.hexdigest()


def command(cmd):
    return mon(cmd)[1].decode()


results = []
for op, kwargs in ops:
    results.append(globals()[op](**kwargs))
cluster.shutdown()
json.dump(results, sys.stdout)
"""


# -- the cluster -----------------------------------------------------------


class CephCluster(Server):
    """A single-node Ceph under ``base``: mon ``a``, memstore OSD ``0``
    and, with ``mgr``, mgr ``x``; everything on 127.0.0.1.

    Use it as the other servers: ``with CephCluster(base) as ceph:`` or
    :meth:`start`/:meth:`stop`; then :meth:`pools`, and point clients at
    :attr:`conf_path` (and :attr:`keyring_path` or :meth:`user_keyring`
    under cephx).  Each start is a fresh cluster with a new fsid: the
    OSD's memstore does not survive a stop.

    :param label: names the cluster in messages and its log (``site-a``);
        the Ceph cluster name stays ``ceph``, which os-brick assumes.
    :param cephx: require cephx everywhere; the keyring then holds keys
        for ``client.admin``, the daemons and each of ``users`` (caps
        ``profile rbd`` on the mon, and on the OSDs for the pools made
        by :meth:`pools`).  Without, auth is ``none`` and the keyring is
        empty.
    :param mgr: run a mgr too.  Only Cinder's capacity needs it: without
        one ``ceph df`` (Cinder's stats) reports 0 bytes and Cinder's
        CapacityFilter refuses the backend.  Costs ~300 MB and a few
        seconds of CPU at start.
    :param users: the client users made under cephx (``client.NAME``).
    :param memstore_bytes: the size the OSD reports.  Memstore keeps the
        data in the OSD's RAM, at 1.4-2x the bytes stored, whatever this
        says; it only limits how much can be written, so it is kept
        modest (1 GiB).  Thin images (Glance's
        ``rbd_thin_provisioning``) store only what was written.
    :param pg_num: placement groups per pool (few: peering is quicker).
    """

    name = "ceph"
    #: ports per cluster: the mon's v2 and v1, then the range the OSD
    #: (8: public, cluster, two heartbeat, each v2 and v1) and the mgr
    #: (2) bind in, with room to spare
    PORTS = 32
    DAEMONS = ("mon.a", "osd.0", "mgr.x")

    def __init__(
        self,
        base: Path,
        label: str = "ceph",
        *,
        cephx: bool = False,
        mgr: bool = False,
        users: Sequence[str] = ("glance", "cinder"),
        memstore_bytes: int = 1 * GiB,
        pg_num: int = 8,
    ) -> None:
        self.label = label
        super().__init__(base, port_block(self.PORTS))
        self.log_path = self.base / "log" / "mon.a.log"
        self.cephx = cephx
        self.with_mgr = mgr
        self.users = list(users)
        self.memstore_bytes = memstore_bytes
        self.pg_num = pg_num
        self.fsid = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: pools made by :meth:`pools`, in order
        self.pool_names: list[str] = []
        #: seconds of the phases of the last start (``mon``, ``osd``,
        #: ``mgr``: from the start of :meth:`start` until ready)
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<CephCluster {self.label} {self.mon_host} {self.fsid}>"

    # -- where things are

    @property
    def mon_host(self) -> str:
        """The mon's addresses, as ``mon host`` says them."""
        return f"[v2:127.0.0.1:{self.port},v1:127.0.0.1:{self.port + 1}]"

    @property
    def url(self) -> str:
        """The mon's addresses (for messages)."""
        return self.mon_host

    @property
    def conf_path(self) -> Path:
        """The cluster's ``ceph.conf``: clients use ``-c`` this file."""
        return self.base / "ceph.conf"

    @property
    def keyring_path(self) -> Path:
        """The keyring the conf names: every key (admin, daemons, users)
        under cephx, empty without.
        """
        return self.base / "keyring"

    def user_keyring(self, user: str) -> Path:
        """The keyring holding only ``client.<user>``'s key (cephx)."""
        return self.base / f"ceph.client.{user}.keyring"

    def ceph_args(self) -> str:
        """``CEPH_ARGS`` for a client that builds its own minimal conf
        (os-brick's RBD connector, in cinder-volume) and so would not
        find this cluster's keyring under cephx.  Give it to that one
        process only: a process-wide keyring hides every other
        cluster's keys.
        """
        return f"--keyring={self.keyring_path}"

    @property
    def pidfile(self) -> Path:
        return self.base / "run" / "mon.a.pid"

    def pids(self) -> dict[str, int]:
        """The PIDs of the running daemons, by name (``osd.0``...)."""
        return {
            name: proc.pid
            for name, proc in self.procs.items()
            if proc.poll() is None
        }

    @property
    def pid(self) -> int | None:
        """The mon's PID, or None when it is not running."""
        return self.pids().get("mon.a")

    # -- start

    def conf_text(self) -> str:
        """The cluster's ``ceph.conf``."""
        auth = "cephx" if self.cephx else "none"
        base = self.base
        port = self.port
        return "\n".join(
            [
                "[global]",
                f"fsid = {self.fsid}",
                f"mon host = {self.mon_host}",
                "mon initial members = a",
                "public addr = 127.0.0.1",
                "public network = 127.0.0.1/32",
                "ms bind ipv4 = true",
                "ms bind ipv6 = false",
                # a taken port fails the start at once, not after 3 x 5 s
                # of retries (the block was free when it was picked)
                "ms bind retry count = 1",
                "ms bind retry delay = 1",
                f"ms bind port min = {port + 2}",
                f"ms bind port max = {port + self.PORTS - 1}",
                f"auth cluster required = {auth}",
                f"auth service required = {auth}",
                f"auth client required = {auth}",
                f"keyring = {self.keyring_path}",
                f"run dir = {base}/run",
                f"admin socket = {base}/run/$name.asok",
                f"pid file = {base}/run/$name.daemon-pid",
                f"log file = {base}/log/$name.log",
                f"crash dir = {base}/crash",
                f"mon data = {base}/mon/$name",
                f"osd data = {base}/osd/$name",
                f"mgr data = {base}/mgr/$name",
                # the mgr imports every module it finds, enabled or not
                # (3.4 s): give it only the ones it always runs
                f"mgr module path = {base}/mgr-modules",
                # no restful (it would try to listen on ::)
                "mgr initial modules = iostat",
                # the data lives in the OSD's RAM (see memstore_bytes)
                "osd objectstore = memstore",
                f"memstore device bytes = {self.memstore_bytes}",
                "osd pool default size = 1",
                "osd pool default min size = 1",
                f"osd pool default pg num = {self.pg_num}",
                f"osd pool default pgp num = {self.pg_num}",
                "osd pool default pg autoscale mode = off",
                "osd crush chooseleaf type = 0",
                # a stopping OSD waits up to 5 s for the mon to ack that
                # it is down: a throw-away cluster need not say
                "osd fast shutdown notify mon = false",
                # the mon batches map changes for 1 s by default: every
                # step of a start (the OSD's crush location, its boot) and
                # of a pool's creation waited for that
                "paxos propose interval = 0.01",
                "paxos min wait = 0.01",
                "mon allow pool size one = true",
                "mon allow pool delete = true",
                "mon warn on pool no redundancy = false",
                "mon warn on insecure global id reclaim allowed = false",
                "mon data avail warn = 1",
                "mon data avail crit = 0",
                "mon max pg per osd = 1000",
                "osd max object name len = 256",
                "osd max object namespace len = 64",
                "",
            ]
        )

    def _keyring_text(self) -> str:
        if not self.cephx:
            return ""
        entries = {
            "mon.": {"mon": "allow *"},
            "client.admin": {
                "mon": "allow *",
                "osd": "allow *",
                "mgr": "allow *",
                "mds": "allow *",
            },
            "osd.0": {
                "mon": "allow profile osd",
                "mgr": "allow profile osd",
                "osd": "allow *",
            },
            "mgr.x": {
                "mon": "allow profile mgr",
                "osd": "allow *",
                "mds": "allow *",
            },
        }
        for user in self.users:
            entries[f"client.{user}"] = self._user_caps()
        text = ""
        for entity, caps in entries.items():
            key = cephx_key()
            text += _keyring_entry(entity, key, caps)
            if entity.startswith("client.") and entity != "client.admin":
                user = entity.removeprefix("client.")
                self.user_keyring(user).write_text(
                    _keyring_entry(entity, key, {})
                )
        return text

    def _user_caps(self) -> dict[str, str]:
        """A client user's caps: rbd on the pools made so far."""
        caps = {"mon": "profile rbd", "mgr": "profile rbd"}
        if self.pool_names:
            caps["osd"] = ", ".join(
                f"profile rbd pool={pool}" for pool in self.pool_names
            )
        return caps

    def _run(self, *argv: str, log: str) -> None:
        with open(self.base / "log" / f"{log}.stdout", "ab") as out:
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                check=False,
            )
        if done.returncode:
            raise RuntimeError(
                f"{self.label}: {' '.join(argv[:2])} failed "
                f"({done.returncode}):\n{self.log_tail()}"
            )

    def _spawn(self, name: str, *argv: str) -> None:
        kind, ident = name.split(".")
        with open(self.base / "log" / f"{name}.stdout", "ab") as out:
            # own session: a daemon outlives a Ctrl-C of the test run's
            # process group until we stop it by PID
            proc = subprocess.Popen(
                [
                    f"/usr/bin/ceph-{kind}",
                    "-c",
                    str(self.conf_path),
                    "-i",
                    ident,
                    "-f",
                    *argv,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )
        self.procs[name] = proc
        (self.base / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")

    def environment(self) -> dict[str, str]:
        """The daemons' and the admin helper's environment: none of the
        caller's ``CEPH_*`` (a ``CEPH_ARGS`` keyring meant for another
        cluster would win over ours).
        """
        return {
            k: v for k, v in os.environ.items() if not k.startswith("CEPH_")
        }

    def admin(
        self, *ops: tuple[str, dict[str, Any]], timeout: float = 60.0
    ) -> list[Any]:
        """Run operations of the admin helper (``_ADMIN``) as
        ``client.admin`` over one connection; return their results.

        :raises RuntimeError: the helper failed; the message has its
            error.
        """
        what = f"{self.label}: ceph admin {[op for op, _ in ops]}"
        if self.pid is None:
            raise RuntimeError(f"{what}: the mon is not running")
        helper = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                "-I",
                "-c",
                _ADMIN,
                str(self.conf_path),
                str(timeout),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment(),
        )
        deadline = time.monotonic() + timeout + 10
        text: str | None = json.dumps(ops)
        while True:
            try:
                out, err = helper.communicate(text, timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                text = None  # sent: a retry only waits
            # librados waits for a mon that is gone as for one that is
            # slow: fail at once when one of our daemons died
            failed = self._exited()
            if failed or time.monotonic() > deadline:
                helper.kill()
                helper.communicate()
                raise RuntimeError(
                    f"{what}: {failed or 'not done in time'}\n"
                    + self.log_tail()
                )
        if helper.returncode:
            raise RuntimeError(f"{what} failed:\n{err[-3000:]}")
        return list(json.loads(out))

    def start(self, timeout: float = 60.0) -> CephCluster:
        """Make a fresh cluster and start it; return when the OSD (and the
        mgr, with ``mgr``) is up.

        :raises RuntimeError: a daemon exited or was not ready in time;
            the message ends with the logs' tails.  Everything started is
            stopped again.
        """
        ensure_ceph()
        t0 = time.monotonic()
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        _say(
            f"ceph {self.label} up in {self.startup_seconds:.1f}s "
            f"({self.mon_host}, fsid {self.fsid})"
        )
        return self

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        if self.pids():
            raise RuntimeError(f"{self.label} is running")
        # a fresh cluster each time: memstore's data is gone anyway
        for sub in ("mon", "osd", "mgr", "mgr-modules", "run", "crash"):
            shutil.rmtree(self.base / sub, ignore_errors=True)
        for sub in ("mon", "osd/osd.0", "mgr/mgr.x", "run", "log", "crash"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.fsid = str(uuid.uuid4())
        self.pool_names = []
        self.conf_path.write_text(self.conf_text())
        self.keyring_path.write_text(self._keyring_text())
        self.keyring_path.chmod(0o600)
        monmap = self.base / "monmap"
        self._run(
            "monmaptool",
            "--create",
            "--clobber",
            "--fsid",
            self.fsid,
            "--addv",
            "a",
            self.mon_host,
            str(monmap),
            log="monmaptool",
        )
        self._run(
            "ceph-mon",
            "-c",
            str(self.conf_path),
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            str(monmap),
            "--keyring",
            str(self.keyring_path),
            log="mon.a",
        )
        self._spawn("mon.a")
        osd_uuid = str(uuid.uuid4())
        # meanwhile: the OSD's memstore (no mon needed)
        self._run(
            "ceph-osd",
            "-c",
            str(self.conf_path),
            "-i",
            "0",
            "--mkfs",
            "--osd-uuid",
            osd_uuid,
            "--no-mon-config",
            log="osd.0",
        )
        # the helper waits for the mon to answer
        self.admin(
            (
                "command",
                {"cmd": {"prefix": "osd new", "uuid": osd_uuid, "id": 0}},
            ),
            timeout=timeout,
        )
        self.timings["mon"] = time.monotonic() - t0
        self._spawn("osd.0")
        if self.with_mgr:
            self._mgr_modules()
            self._spawn("mgr.x")
        self.admin(("osd_up", {"osd": 0}), timeout=timeout)
        self.timings["osd"] = time.monotonic() - t0
        self._check_running()
        if self.with_mgr:
            self.admin(("mgr_available", {}), timeout=timeout)
            self.timings["mgr"] = time.monotonic() - t0
            self._check_running()

    #: the modules the mgr of Ceph 16 always runs (``ceph mgr module
    #: ls``: ``always_on_modules``), and the ones they import
    MGR_MODULES = (
        "mgr_module.py",
        "mgr_util.py",
        "balancer",
        "crash",
        "devicehealth",
        "orchestrator",
        "pg_autoscaler",
        "progress",
        "rbd_support",
        "status",
        "telemetry",
        "volumes",
        "iostat",
    )

    def _mgr_modules(self) -> None:
        folder = self.base / "mgr-modules"
        folder.mkdir(exist_ok=True)
        for module in self.MGR_MODULES:
            link = folder / module
            if not link.is_symlink():
                link.symlink_to(MGR_MODULE_PATH / module)

    def _exited(self) -> str:
        """Which of our daemons exited, or ``""``."""
        return ", ".join(
            f"{name} exited ({proc.returncode})"
            for name, proc in self.procs.items()
            if proc.poll() is not None
        )

    def _check_running(self) -> None:
        failed = self._exited()
        if failed:
            raise RuntimeError(f"{self.label}: {failed}:\n{self.log_tail()}")

    # -- pools and images

    def pools(self, *names: str, timeout: float = 60.0) -> list[str]:
        """Create rbd pools (size 1, :attr:`pg_num` PGs, ``rbd pool
        init``); return when they take writes.  Under cephx the
        :attr:`users` then get ``profile rbd`` on every pool made so far.
        """
        t0 = time.monotonic()
        new = [name for name in names if name not in self.pool_names]
        ops: list[tuple[str, dict[str, Any]]] = [
            ("pools", {"names": new, "pg_num": self.pg_num})
        ]
        self.pool_names += new
        if self.cephx:
            for user in self.users:
                caps = self._user_caps()
                ops.append(
                    (
                        "command",
                        {
                            "cmd": {
                                "prefix": "auth caps",
                                "entity": f"client.{user}",
                                "caps": [
                                    item
                                    for kind, cap in caps.items()
                                    for item in (kind, cap)
                                ],
                            }
                        },
                    )
                )
        self.admin(*ops, timeout=timeout)
        self.timings["pools"] = time.monotonic() - t0
        return list(names)

    def rbd_ls(self, pool: str) -> list[str]:
        """The RBD images in ``pool``, sorted."""
        return list(self.admin(("ls", {"pool": pool}))[0])

    def rbd_info(self, pool: str, image: str) -> dict[str, Any]:
        """``size`` (bytes), ``parent`` (None, or the parent's spec) and
        ``snaps`` (name -> protected) of an RBD image.
        """
        return dict(self.admin(("info", {"pool": pool, "image": image}))[0])

    def rbd_snaps(self, pool: str, image: str) -> dict[str, bool]:
        """The snapshots of an RBD image: name -> protected."""
        return dict(self.rbd_info(pool, image)["snaps"])

    def mon_commands(self, *cmds: dict[str, Any]) -> list[Any]:
        """Run mon commands (``{"prefix": "osd pool ls", ...}``) as admin
        over one connection; return each one's JSON answer (parsed; None
        for a command that answers nothing, as ``osd pool create``).
        Quicker than :meth:`ceph` (no CLI process per command).
        """
        return [
            json.loads(out) if out.strip() else None
            for out in self.admin(
                *(("command", {"cmd": {**c, "format": "json"}}) for c in cmds)
            )
        ]

    def ceph(self, *args: str, timeout: float = 60.0) -> str:
        """Run the ``ceph`` CLI against this cluster as admin; return its
        output.
        """
        return subprocess.run(
            ["ceph", "-c", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=timeout,
            check=True,
        ).stdout

    # -- stop

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the daemons we started, by PID: SIGTERM to all at once,
        wait, SIGKILL what is left after ``timeout``; memstore's data is
        gone with the OSD.
        """
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in self.procs:
            (self.base / "run" / f"{name}.pid").unlink(missing_ok=True)
        self.procs.clear()

    def kill(self) -> None:
        """Kill every daemon at once (a crash)."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            (self.base / "run" / f"{name}.pid").unlink(missing_ok=True)
        self.procs.clear()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the daemons' logs and stdout."""
        parts = []
        for name in self.DAEMONS:
            for path in (
                self.base / "log" / f"{name}.log",
                self.base / "log" / f"{name}.stdout",
            ):
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                if text.strip():
                    tail = "\n".join(text.splitlines()[-lines // 2 :])
                    parts.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(parts)

    def venv(self) -> Path:
        raise NotImplementedError("Ceph runs Debian's binaries, no venv")

    def prepare(self) -> None:
        """Nothing: :meth:`start` makes the cluster."""

    def __enter__(self) -> CephCluster:
        return self.start()


def _main(argv: list[str]) -> int:
    """``DIR [--cephx] [--mgr] [POOL ...]``: run a cluster until Ctrl-C."""
    args = [a for a in argv if not a.startswith("--")]
    if not args or {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0 if args else 2

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # a kill of this process stops the cluster as Ctrl-C does
    signal.signal(signal.SIGTERM, interrupt)
    cluster = CephCluster(
        Path(args[0]),
        Path(args[0]).name,
        cephx="--cephx" in argv,
        mgr="--mgr" in argv,
    )
    try:
        cluster.start()
        cluster.pools(*args[1:])
        print(
            f"ceph on {cluster.mon_host} (fsid {cluster.fsid}, pids "
            f"{cluster.pids()}); pools {cluster.pool_names}\n"
            f"  ceph -c {cluster.conf_path} -s\n"
            f"  keyring {cluster.keyring_path}; Ctrl-C stops it",
            flush=True,
        )
        while not cluster._exited():
            time.sleep(1)
        print(cluster._exited(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
