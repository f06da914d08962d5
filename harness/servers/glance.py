"""Glance 33 under uWSGI: sqlite or MariaDB, the test stores."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from harness.servers.base import _TEMPLATES, Server, _render, ensure_venv
from harness.servers.keystone import KeystoneServer


class GlanceServer(Server):
    """Glance 33 with stores ``fast`` (file, default), ``cheap`` (file) and
    ``web`` (http, read-only), or, with ``multistore=False``, one file
    store and no ``enabled_backends``.

    By default everything is under ``base``, the database is sqlite and
    each start runs ``glance-manage db_sync``.  A production-shaped node
    (see :class:`GlanceCluster`) gets instead:

    :param database_url: a SQLAlchemy URL of a server database, e.g.
        :meth:`MariaDBServer.create_database`'s; several workers can then
        write at once, and several nodes can share it.
    :param store_root: the directory holding the file stores' directories
        (``fast``, ``cheap``, ``single``); give nodes the same one so an
        image written by one is read by another.  Staging and tasks stay
        per node, as in a real deployment.
    :param db_sync: run ``db_sync`` at the first start.  With a
        ``database_url`` it runs once per instance (a restart finds the
        schema in place); a second node on a synced database passes False.
    :param stores_config: text that replaces the stores part of
        glance-api.conf (``[glance_store]``, the stores' and the reserved
        stores' sections; ``@BASE@`` is replaced by ``base``).  It comes
        last in the file, so a ``[DEFAULT]`` section in it overrides the
        template's ``enabled_backends``: for tests of bad store
        configurations.
    :param policy_rules: with ``keystone``, rules that replace upstream's
        defaults (``{"add_image_location": "..."}``).

    With a ``database_url``, :meth:`start` also waits until every worker
    has loaded the app, not only the first one that answers.
    """

    name = "glance-api"
    ready_path = "/versions"
    BACKENDS = (("fast", "file"), ("cheap", "file"), ("web", "http"))

    def __init__(
        self,
        base: Path,
        port: int | None = None,
        *,
        multistore: bool = True,
        processes: int = 2,
        without: Sequence[str] = (),
        keystone: KeystoneServer | None = None,
        token_cache_time: int = 300,
        debug: bool = False,
        database_url: str | None = None,
        store_root: Path | None = None,
        db_sync: bool = True,
        stores_config: str | None = None,
        policy_rules: dict[str, str] | None = None,
    ) -> None:
        super().__init__(base, port)
        self.stores_config = stores_config
        self.policy_rules = dict(policy_rules or {})
        #: debug logging (each request's user and project on its lines)
        self.debug = debug
        #: None: sqlite in ``base`` (one writer at a time: one worker)
        self.database_url = database_url
        self.store_root = (
            Path(store_root).resolve() if store_root else self.base / "stores"
        )
        self.db_sync = db_sync
        #: start() returns when all workers loaded the app: with
        #: lazy-apps they load one after another, and a SIGTERM that
        #: meets a worker still loading leaves it hanging until the
        #: master is SIGKILLed (a stop right after a start took 20 s)
        self.wait_workers = database_url is not None
        self.multistore = multistore
        self.processes = processes
        #: with a Keystone, Glance runs upstream's "keystone" flavor
        #: (keystonemiddleware authtoken, upstream RBAC defaults)
        self.keystone = keystone
        #: authtoken's in-process token cache; -1 validates every request
        #: (a revoked token is otherwise accepted until the cache expires)
        self.token_cache_time = token_cache_time
        #: stores left out of enabled_backends (not "fast", the default);
        #: change it and restart to remove a store from a running Glance
        self.without = list(without)

    def venv(self) -> Path:
        return ensure_venv("glance")

    def store_dir(self, store: str) -> Path:
        """Where a file store keeps its images."""
        return self.store_root / store

    def prepare(self) -> None:
        for store in ("fast", "cheap", "single"):
            self.store_dir(store).mkdir(parents=True, exist_ok=True)
        for sub in ("staging", "tasks"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "BASE": str(self.base),
            "ETC": str(self.etc),
            "PORT": str(self.port),
            "PROCESSES": str(self.processes),
            "DEBUG": "true" if self.debug else "false",
            "BACKENDS": (
                "enabled_backends = "
                + ", ".join(
                    f"{name}:{kind}"
                    for name, kind in self.BACKENDS
                    if name not in self.without
                )
                if self.multistore
                else ""
            ),
        }
        if self.keystone is None:
            values["FLAVOR"] = "devauth"
            values["POLICY"] = (
                f"[oslo_policy]\npolicy_file = {self.etc}/policy.yaml"
            )
            values["AUTHTOKEN"] = ""
        else:
            values["FLAVOR"] = "keystone"
            values["POLICY"] = ""
            if self.policy_rules:
                # upstream's defaults, but for these rules
                rules = self.etc / "policy-rules.yaml"
                rules.write_text(
                    "".join(
                        f"{json.dumps(k)}: {json.dumps(v)}\n"
                        for k, v in self.policy_rules.items()
                    )
                )
                values["POLICY"] = f"[oslo_policy]\npolicy_file = {rules}"
            values["AUTHTOKEN"] = self.keystone.authtoken_section(
                "glance", self.token_cache_time
            )
        stores_tpl = (
            "stores-multi.conf" if self.multistore else "stores-single.conf"
        )
        # inserted into glance-api.conf after @BASE@ is replaced there
        stores_text = (
            self.stores_config or (_TEMPLATES / stores_tpl).read_text()
        )
        # the file stores may live elsewhere (shared by nodes); staging
        # and tasks stay under this node's base
        stores_text = stores_text.replace(
            "@BASE@/stores", str(self.store_root)
        )
        values["STORES"] = stores_text.replace("@BASE@", str(self.base))
        _render("glance-api.conf", self.etc / "glance-api.conf", values)
        if self.database_url is not None:
            self._use_database(self.etc / "glance-api.conf")
        _render("glance-uwsgi.ini", self.ini, values)
        _render(
            "glance-api-paste.ini", self.etc / "glance-api-paste.ini", values
        )
        _render("policy.yaml", self.etc / "policy.yaml", values)
        _render("glance_devauth.py", self.etc / "glance_devauth.py", values)
        if self.db_sync:
            self._manage_db(
                "glance-manage",
                "glance-api.conf",
                "db_sync",
                sqlite=(
                    self.base / "glance.sqlite"
                    if self.database_url is None
                    else None
                ),
            )
            if self.database_url is not None:
                # the schema is in the server database now: a restart of
                # this node (a failover test) need not sync it again
                self.db_sync = False

    #: uWSGI's line when a worker has loaded the app
    _WORKER_READY = re.compile(
        r"WSGI app 0 \(mountpoint=''\) ready in .* pid: (\d+)"
    )

    def start(self, timeout: float = 90.0) -> GlanceServer:
        """Start; return when it answers, and with :attr:`wait_workers`
        when every worker has loaded the app.

        :raises RuntimeError: it exited or was not ready in time; the
            message ends with the tail of its log.
        """
        t0 = time.monotonic()
        try:
            mark = self.log_path.stat().st_size
        except OSError:
            mark = 0
        super().start(timeout)
        if not self.wait_workers:
            return self
        while len(self._ready_workers(mark)) < self.processes:
            if self.pid is None:
                raise RuntimeError(
                    f"{self.name} exited during start-up:\n{self.log_tail()}"
                )
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError(
                    f"{self.name}: not all {self.processes} workers ready "
                    f"within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - t0
        return self

    def _ready_workers(self, mark: int) -> set[str]:
        """PIDs of the workers that logged "ready" after byte ``mark``."""
        with open(self.log_path, "rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
        return set(self._WORKER_READY.findall(text))

    #: the template's sqlite line, replaced for a server database
    _SQLITE_LINE = "connection = sqlite:///{base}/glance.sqlite\n"

    def _use_database(self, conf: Path) -> None:
        """Point the rendered ``conf`` at :attr:`database_url`, with a
        fixed connection pool per worker.
        """
        text = conf.read_text()
        line = self._SQLITE_LINE.format(base=self.base)
        if line not in text:
            raise RuntimeError(f"no {line.strip()!r} in {conf} to replace")
        conf.write_text(
            text.replace(
                line,
                f"connection = {self.database_url}\n"
                # oslo.db's default overflow is 50 per worker; pinned so
                # the connections of N nodes x M workers stay predictable
                # (MariaDBServer allows 500)
                "max_pool_size = 5\n"
                "max_overflow = 10\n",
            )
        )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, OS_GLANCE_CONFIG_DIR=str(self.etc))
        env.pop("PYTHONWARNINGS", None)
        return env
