"""Install and run the real servers that tests, the demo and the benchmarks
use: Glance 33 and cinder-api 29 under uWSGI, Keystone 30, and the whole
of Cinder 29 (api, scheduler, volume) over RabbitMQ, on 127.0.0.1 only;
and a production-shaped Glance: nodes of several workers on MariaDB,
sharing their stores, behind haproxy.

Each server gets its own virtualenv, built once from PyPI and cached under
``$VOLUME_IMAGE_CACHE`` (default ``~/.cache/volume_image``); the project's
own environment never sees their packages.  Servers are started in their
own session and stopped by the PID they wrote, never by name.

Command line::

    python -m harness.launcher setup      # venvs, qemu-img, ceph,
                                                       # rabbitmq-server,
                                                       # mariadb-server,
                                                       # haproxy
    python -m harness.launcher glance DIR  # run until Ctrl-C
    python -m harness.launcher cinder DIR GLANCE_URL
    python -m harness.launcher rabbit DIR
    python -m harness.launcher stack DIR   # rabbit + Glance +
                                                       # api/scheduler/volume
    python -m harness.launcher mariadb DIR
    python -m harness.launcher ha DIR      # MariaDB + 2 Glance
                                                       # nodes x 4 workers +
                                                       # haproxy
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from harness.servers.base import (
    VENVS,
    Server,
    cache_dir,
    ensure_qemu_img,
    ensure_venv,
    free_port,
)
from harness.servers.ceph import add_ceph_bindings, ensure_ceph
from harness.servers.cinder import (
    PROJECT_ID,
    CinderServer,
)
from harness.servers.cinder_stack import (
    FILE_DRIVER,
    CinderStack,
)
from harness.servers.glance import (
    GlanceServer,
)
from harness.servers.glance_cluster import (
    GlanceCluster,
)
from harness.servers.haproxy import (
    HAProxyServer,
    ensure_haproxy,
)
from harness.servers.keystone import (
    KeystoneServer,
)
from harness.servers.mariadb import (
    MariaDBServer,
    ensure_mariadb,
)
from harness.servers.rabbit import (
    RabbitServer,
    ensure_rabbitmq,
)

__all__ = [
    "FILE_DRIVER",
    "PROJECT_ID",
    "VENVS",
    "CinderServer",
    "CinderStack",
    "GlanceCluster",
    "GlanceServer",
    "HAProxyServer",
    "KeystoneServer",
    "MariaDBServer",
    "RabbitServer",
    "Server",
    "cache_dir",
    "ensure_haproxy",
    "ensure_mariadb",
    "ensure_qemu_img",
    "ensure_rabbitmq",
    "ensure_venv",
    "free_port",
]


def _stop_on_sigterm() -> None:
    """Make SIGTERM stop the servers as Ctrl-C does (a ``kill`` of the
    launcher would otherwise leave them running).
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _serve(server: Server) -> int:
    """Run ``server`` until Ctrl-C."""
    _stop_on_sigterm()
    server.start()
    print(f"{server.name} on {server.url} (pid {server.pid}); Ctrl-C stops it")
    try:
        while server.pid:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _serve_stack(base: Path) -> int:
    """Run RabbitMQ, Glance and a :class:`CinderStack` under ``base``
    until Ctrl-C.
    """
    _stop_on_sigterm()
    started: list[Server] = []
    try:
        rabbit = RabbitServer(base / "rabbit").start()
        started.append(rabbit)
        glance = GlanceServer(base / "glance", processes=1).start()
        started.append(glance)
        stack = CinderStack(base / "cinder", glance.url, rabbit.transport_url)
        started.append(stack.start())
        for server in started:
            print(
                f"{server.name} on {server.url} (pid {server.pid}, "
                f"up in {server.startup_seconds:.1f}s)"
            )
        print(f"volume files in {stack.volumes_dir}; Ctrl-C stops all")
        while all(server.pid for server in started):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(started):
            server.stop()
    return 0


def _serve_ha(base: Path, nodes: int = 2, processes: int = 4) -> int:
    """Run MariaDB and a :class:`GlanceCluster` under ``base`` until
    Ctrl-C.
    """
    _stop_on_sigterm()
    started: list[Server] = []
    try:
        db = MariaDBServer(base / "mariadb").start()
        started.append(db)
        cluster = GlanceCluster(
            base / "glance",
            db.create_database("glance_ha"),
            nodes=nodes,
            processes=processes,
        )
        cluster.start()
        started.extend(cluster.servers)
        for server in started:
            print(
                f"{server.name} on {server.url} (pid {server.pid}, "
                f"up in {server.startup_seconds:.1f}s)"
            )
        print(
            f"Glance via haproxy: {cluster.url} (stats "
            f"{cluster.proxy.stats_url}); stores in "
            f"{cluster.nodes[0].store_root}; Ctrl-C stops all"
        )
        while all(server.pid for server in started):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(started):
            server.stop()
    return 0


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "setup":
        names = argv[1:] or list(VENVS)
        for name in names:
            print(f"{name}: {ensure_venv(name)}")
        print(f"qemu-img: {ensure_qemu_img()}")
        print(f"rabbitmq-server: {ensure_rabbitmq()}")
        print(f"mariadbd: {ensure_mariadb()}")
        print(f"haproxy: {ensure_haproxy()}")
        ensure_ceph()
        for name in ("glance", "cinder"):
            add_ceph_bindings(ensure_venv(name))
        print("ceph: mon, osd, mgr; rados/rbd in the glance and cinder venvs")
        return 0
    if argv[0] == "glance" and len(argv) == 2:
        return _serve(GlanceServer(Path(argv[1])))
    if argv[0] == "cinder" and len(argv) == 3:
        return _serve(CinderServer(Path(argv[1]), argv[2]))
    if argv[0] == "rabbit" and len(argv) == 2:
        return _serve(RabbitServer(Path(argv[1])))
    if argv[0] == "stack" and len(argv) == 2:
        return _serve_stack(Path(argv[1]))
    if argv[0] == "mariadb" and len(argv) == 2:
        return _serve(MariaDBServer(Path(argv[1])))
    if argv[0] == "ha" and len(argv) == 2:
        return _serve_ha(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
