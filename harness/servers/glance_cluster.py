"""A production-shaped Glance: nodes of several workers on MariaDB,
sharing their stores, behind haproxy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.servers.base import Server, _other_port
from harness.servers.glance import GlanceServer
from harness.servers.haproxy import HAProxyServer


class GlanceCluster:
    """Production-shaped Glance: ``nodes`` :class:`GlanceServer` nodes of
    ``processes`` uWSGI workers each, on one server database and one
    directory of file stores, behind an :class:`HAProxyServer`.

    Node ``a`` runs ``db_sync``; the others start on its schema.  Nodes
    start one after another: on 2 cores, parallel starts of 4-worker
    nodes only compete for the CPU.  The layout under ``base``:
    ``a/``, ``b/``... (each node's config, logs, staging, tasks),
    ``stores/`` (shared: ``fast``, ``cheap``), ``haproxy/``.

    :param database_url: a server database (not sqlite), e.g. from
        :meth:`MariaDBServer.create_database`.
    :param proxy_options: keyword arguments of :class:`HAProxyServer`
        (``balance``, ``check_*``...).
    :param glance_options: further keyword arguments of every node's
        :class:`GlanceServer`.
    """

    def __init__(
        self,
        base: Path,
        database_url: str,
        *,
        nodes: int = 2,
        processes: int = 4,
        proxy_options: Mapping[str, Any] | None = None,
        **glance_options: Any,
    ) -> None:
        if not 1 <= nodes <= 26:
            raise ValueError(f"1 to 26 nodes, not {nodes}")
        self.base = Path(base).resolve()
        # one set: free_port() alone could hand two servers the same port
        # before either of them listens
        taken: set[int] = set()
        self.names = [chr(ord("a") + i) for i in range(nodes)]
        self.nodes = [
            GlanceServer(
                self.base / name,
                _other_port(taken),
                processes=processes,
                database_url=database_url,
                store_root=self.base / "stores",
                db_sync=i == 0,
                **glance_options,
            )
            for i, name in enumerate(self.names)
        ]
        self.proxy = HAProxyServer(
            self.base / "haproxy",
            {
                name: node.port
                for name, node in zip(self.names, self.nodes, strict=True)
            },
            _other_port(taken),
            **(proxy_options or {}),
        )
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        """haproxy's URL: what clients use."""
        return self.proxy.url

    @property
    def servers(self) -> list[Server]:
        """Every process of the cluster: the nodes, then haproxy."""
        return [*self.nodes, self.proxy]

    def node(self, name: str) -> GlanceServer:
        """The node haproxy calls ``name`` (``a``, ``b``...)."""
        return self.nodes[self.names.index(name)]

    def store_dir(self, store: str) -> Path:
        """Where a file store keeps its images (the same for all nodes)."""
        return self.nodes[0].store_dir(store)

    def start(self, timeout: float = 120.0) -> GlanceCluster:
        """Start the nodes, then haproxy; return when haproxy has every
        node UP.  A failure stops what was started.
        """
        t0 = time.monotonic()
        try:
            for node in self.nodes:
                node.start(timeout)
            self.proxy.start(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop haproxy, then the nodes (each by its PID)."""
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> GlanceCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: a project id cinder's default project_id_regex ([0-9a-f-]+) accepts;
#: noauth takes the token "admin:PROJECT_ID"
