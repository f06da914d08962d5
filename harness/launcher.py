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

    python -m harness.launcher setup      # venvs, qemu-img,
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

import contextlib
import csv
import fcntl
import grp
import hashlib
import io
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3 as ks_v3

from harness import cinderapi

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
    "ensure_haproxy",
    "ensure_mariadb",
    "ensure_qemu_img",
    "ensure_rabbitmq",
    "ensure_venv",
    "free_port",
]

# Pinned: the versions whose behaviour the tests document.
VENVS: dict[str, list[str]] = {
    # Keystone shares Glance's virtualenv: it adds 13 packages and
    # changes none of Glance's
    "glance": [
        "glance==33.0.0",
        "glance-store==5.7.0",
        "python-glanceclient==4.13.0",
        "keystone==30.0.0",
        "uwsgi==2.0.31",
        # Glance's MySQL driver, for the production-shaped Glance on
        # MariaDB (GlanceServer(database_url=...)); pure Python
        "PyMySQL==1.2.4",
    ],
    "cinder": [
        "cinder==29.0.0",
        "uwsgi==2.0.31",
        # a second WSGI server for cinder-api: unlike uWSGI it reads
        # chunked request bodies and says so (wsgi.input_terminated)
        "gunicorn==23.0.0",
    ],
    # the real command-line clients, for tests that drive cinder the way
    # a user does (``cinder upload-to-image``)
    "clients": [
        "python-cinderclient==9.10.0",
        "python-openstackclient==10.5.0",
    ],
}

_TEMPLATES = resources.files("harness") / "templates"


def cache_dir() -> Path:
    """Where server virtualenvs are kept between runs."""
    env = os.environ.get("VOLUME_IMAGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "volume_image"


def _say(msg: str) -> None:
    print(f"[launcher] {msg}", file=sys.stderr, flush=True)


def ensure_venv(name: str) -> Path:
    """Return the virtualenv for server ``name``, building it if needed.

    The directory name carries a hash of the pinned requirements and the
    Python version, so a change of either builds a fresh one.  The build
    runs under a file lock, and ``.complete`` is written last, so an
    interrupted build is thrown away and redone, never used.
    """
    reqs = VENVS[name]
    digest = hashlib.sha256("\n".join([sys.version, *reqs]).encode())
    key = digest.hexdigest()[:12]
    root = cache_dir() / "venvs"
    venv = root / f"{name}-{key}"
    if (venv / ".complete").exists():
        return venv
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        _say(f"building the {name} virtualenv ({', '.join(reqs)})")
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        log = root / f"{name}-{key}.pip.log"
        with open(log, "wb") as out:
            rc = subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    *reqs,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc:
            tail = log.read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(
                f"pip could not build the {name} virtualenv:\n"
                + "\n".join(tail)
            )
        (venv / ".complete").write_text("\n".join(reqs) + "\n")
        _say(f"{name} virtualenv ready in {time.monotonic() - t0:.0f}s")
    return venv


def ensure_qemu_img() -> str:
    """Return the path of ``qemu-img``, installing Debian's qemu-utils
    when it is missing and we are root.
    """
    found = shutil.which("qemu-img")
    if found:
        return found
    _apt_install("qemu-utils")
    found = shutil.which("qemu-img")
    if not found:
        raise RuntimeError("qemu-utils installed but qemu-img not found")
    return found


#: Debian's broker start script; the wrapper in /usr/sbin would ``su`` to
#: the rabbitmq user and write under /var, so we run this one directly
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def ensure_rabbitmq() -> Path:
    """Return the path of RabbitMQ's start script, installing Debian's
    rabbitmq-server when it is missing and we are root.

    The package's postinst does not start a broker here (no systemd):
    :class:`RabbitServer` runs its own.
    """
    if RABBITMQ_SERVER.exists():
        return RABBITMQ_SERVER
    _apt_install("rabbitmq-server")
    if not RABBITMQ_SERVER.exists():
        raise RuntimeError(
            f"rabbitmq-server installed but {RABBITMQ_SERVER} not found"
        )
    return RABBITMQ_SERVER


def _sbin_which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories, where
    Debian puts daemons (a non-login root shell may not have them).
    """
    path = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
    )
    return shutil.which(name, path=path)


def _apt_install(package: str) -> None:
    """Install Debian's ``package`` with apt-get (root only).

    :raises RuntimeError: we are not root or have no apt-get.
    """
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"install the {package} package (we are not root)")
    _say(f"installing {package} (apt-get)")
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # another apt may hold the dpkg lock: wait for it instead of failing
    subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=900", "update", "-qq"],
        check=True,
        env=env,
    )
    subprocess.run(
        [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=900",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            package,
        ],
        check=True,
        env=env,
    )
    _say(f"{package} installed in {time.monotonic() - t0:.0f}s")


def ensure_mariadb() -> str:
    """Return the path of ``mariadbd``, installing Debian's mariadb-server
    when it is missing and we are root.

    The package's postinst does not start the system instance here (no
    systemd, ``policy-rc.d``), and :class:`MariaDBServer` would not use
    it anyway: it runs its own ``mariadbd --no-defaults``.
    """
    found = _sbin_which("mariadbd") or _sbin_which("mysqld")
    if found and _sbin_which("mariadb-install-db"):
        return found
    _apt_install("mariadb-server")
    found = _sbin_which("mariadbd") or _sbin_which("mysqld")
    if not found or not _sbin_which("mariadb-install-db"):
        raise RuntimeError(
            "mariadb-server installed but mariadbd or mariadb-install-db "
            "not found"
        )
    return found


def ensure_haproxy() -> str:
    """Return the path of ``haproxy``, installing Debian's haproxy when it
    is missing and we are root (no system instance is started: no
    systemd; :class:`HAProxyServer` runs its own).
    """
    found = _sbin_which("haproxy")
    if found:
        return found
    _apt_install("haproxy")
    found = _sbin_which("haproxy")
    if not found:
        raise RuntimeError("haproxy installed but not found")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _render(name: str, dest: Path, values: dict[str, str]) -> None:
    text = (_TEMPLATES / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    dest.write_text(text)


class Server:
    """A uWSGI server we started: config under ``base``, stopped by PID.

    Subclasses render their configs in :meth:`prepare` and say how to tell
    that they are ready.
    """

    name = "server"
    ready_path = "/"
    ready_status = 200

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base = Path(base).resolve()
        self.port = port or free_port()
        self.etc = self.base / "etc"
        self.log_path = self.base / "log" / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.base / f"{self.name}.pid"

    def venv(self) -> Path:
        raise NotImplementedError

    def prepare(self) -> None:
        """Render configs and prepare the database."""
        raise NotImplementedError

    def command(self) -> list[str]:
        return [str(self.venv() / "bin" / "uwsgi"), "--ini", str(self.ini)]

    @property
    def ini(self) -> Path:
        return self.etc / f"{self.name}-uwsgi.ini"

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 90.0) -> Server:
        """Prepare and start the server; return when it answers.

        :raises RuntimeError: it exited or did not answer in time; the
            message ends with the tail of its log.
        """
        t0 = time.monotonic()
        for sub in ("etc", "log", "locks"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        if self._answers():
            raise RuntimeError(f"something already answers on {self.url}")
        self.prepare()
        with open(self.log_path, "ab") as log:
            # own session: the server outlives a Ctrl-C of the test run's
            # process group until we stop it by PID
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited during start-up:\n{self.log_tail()}"
                )
            if self._answers():
                self.startup_seconds = time.monotonic() - t0
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer within {timeout}s:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                self.url + self.ready_path, timeout=2
            ) as resp:
                return bool(resp.status == self.ready_status)
        except urllib.error.HTTPError as exc:
            return exc.code == self.ready_status
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        """The uWSGI master's PID, or None when not running."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        return None

    def _workers(self) -> list[int]:
        if self.pid is None:
            return []
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL what is left."""
        if self.proc is None:
            return
        workers = self._workers()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap(workers)
        self.proc = None
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill the master and its workers at once (a crash)."""
        if self.proc is None:
            return
        workers = self._workers()
        self.proc.kill()
        self.proc.wait()
        self._reap(workers)
        self.proc = None

    @staticmethod
    def _reap(workers: list[int]) -> None:
        # a worker stuck in a request can outlive a killed master
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _manage_db(self, tool: str, conf: str, *command: str) -> None:
        """Run the server's ``<tool> --config-file <conf> <command>``
        (its database sync), logging to ``log/db_sync.log``.

        :raises RuntimeError: it failed; the message ends with its log.
        """
        log = self.base / "log" / "db_sync.log"
        with open(log, "wb") as out:
            rc = subprocess.run(
                [
                    str(self.venv() / "bin" / tool),
                    "--config-file",
                    str(self.etc / conf),
                    *command,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc:
            raise RuntimeError(
                f"{tool} {' '.join(command)} failed:\n"
                + log.read_text(errors="replace")[-3000:]
            )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    ) -> None:
        super().__init__(base, port)
        self.stores_config = stores_config
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
            self._manage_db("glance-manage", "glance-api.conf", "db_sync")
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


class KeystoneServer(Server):
    """Keystone 30 with fernet tokens and sqlite, bootstrapped with these
    users, all in domain ``default`` (see :attr:`USERS`):

    ``admin`` (admin in project ``admin``), ``demo`` (member in ``demo``),
    ``demo-reader`` (reader in ``demo``), and the service users ``glance``
    and ``cinder`` (role ``service`` in project ``service``; ``cinder`` is
    also a reader there, which is all the filter needs to list stores).

    :param token_expiration: token lifetime in seconds.  keystoneauth1
        renews a token 120 s before it expires, so below 120 s every
        request of a keystoneauth1 session authenticates again.
    """

    name = "keystone"
    ready_path = "/v3"
    REGION = "RegionOne"
    #: name -> (password, project, roles)
    USERS: ClassVar[dict[str, tuple[str, str, tuple[str, ...]]]] = {
        "admin": ("admin-pw", "admin", ("admin",)),
        "demo": ("demo-pw", "demo", ("member",)),
        "demo-reader": ("reader-pw", "demo", ("reader",)),
        "glance": ("glance-pw", "service", ("service",)),
        "cinder": ("cinder-pw", "service", ("service", "reader")),
    }

    def __init__(
        self,
        base: Path,
        port: int | None = None,
        *,
        token_expiration: int = 3600,
    ) -> None:
        super().__init__(base, port)
        self.token_expiration = token_expiration
        self.project_ids: dict[str, str] = {}

    def venv(self) -> Path:
        # Keystone shares Glance's virtualenv (see VENVS)
        return ensure_venv("glance")

    @property
    def auth_url(self) -> str:
        """The identity v3 URL clients authenticate at."""
        return f"{self.url}/v3"

    def credentials(self, user: str) -> dict[str, str]:
        """``OS_*`` variables for password auth as ``user``."""
        password, project, _ = self.USERS[user]
        return {
            "OS_AUTH_TYPE": "password",
            "OS_AUTH_URL": self.auth_url,
            "OS_USERNAME": user,
            "OS_PASSWORD": password,
            "OS_PROJECT_NAME": project,
            "OS_USER_DOMAIN_ID": "default",
            "OS_PROJECT_DOMAIN_ID": "default",
            "OS_REGION_NAME": self.REGION,
        }

    def authtoken_section(self, user: str, cache_time: int) -> str:
        """keystonemiddleware's ``[keystone_authtoken]`` for a service."""
        password, project, _ = self.USERS[user]
        return "\n".join(
            [
                "[keystone_authtoken]",
                f"www_authenticate_uri = {self.url}",
                f"auth_url = {self.url}",
                "auth_type = password",
                f"username = {user}",
                f"password = {password}",
                "user_domain_id = default",
                f"project_name = {project}",
                "project_domain_id = default",
                f"region_name = {self.REGION}",
                f"token_cache_time = {cache_time}",
                "service_token_roles = service",
                "service_token_roles_required = true",
            ]
        )

    def _manage(self, *args: str) -> tuple[str, subprocess.Popen[bytes]]:
        log = self.base / "log" / f"manage-{args[0]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    str(self.venv() / "bin" / "keystone-manage"),
                    "--config-file",
                    str(self.etc / "keystone.conf"),
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
            )
        return args[0], proc

    def _wait(self, *runs: tuple[str, subprocess.Popen[bytes]]) -> None:
        for name, proc in runs:
            if proc.wait():
                log = self.base / "log" / f"manage-{name}.log"
                raise RuntimeError(
                    f"keystone-manage {name} failed:\n"
                    + log.read_text(errors="replace")[-3000:]
                )

    def prepare(self) -> None:
        for sub in ("fernet-keys", "credential-keys"):
            (self.base / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        values = {
            "BASE": str(self.base),
            "PORT": str(self.port),
            "TOKEN_EXPIRATION": str(self.token_expiration),
        }
        _render("keystone.conf", self.etc / "keystone.conf", values)
        _render("keystone-uwsgi.ini", self.ini, values)
        marker = self.base / "bootstrap.done"
        if marker.exists() and marker.read_text() == self.url:
            return
        owner = [
            "--keystone-user",
            pwd.getpwuid(os.geteuid()).pw_name,
            "--keystone-group",
            grp.getgrgid(os.getegid()).gr_name,
        ]
        # independent of each other; each costs ~3 s of imports
        self._wait(
            self._manage("db_sync"),
            self._manage("fernet_setup", *owner),
            self._manage("credential_setup", *owner),
        )
        self._wait(
            self._manage(
                "bootstrap",
                "--bootstrap-password",
                self.USERS["admin"][0],
                "--bootstrap-region-id",
                self.REGION,
                "--bootstrap-admin-url",
                self.auth_url,
                "--bootstrap-internal-url",
                self.auth_url,
                "--bootstrap-public-url",
                self.auth_url,
            )
        )
        marker.write_text(self.url)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, OS_KEYSTONE_CONFIG_DIR=str(self.etc))
        env.pop("PYTHONWARNINGS", None)
        return env

    def start(self, timeout: float = 90.0) -> KeystoneServer:
        super().start(timeout)
        t0 = time.monotonic()
        self._create_identities()
        self.startup_seconds += time.monotonic() - t0
        return self

    def session(
        self, user: str = "admin", timeout: float = 60.0
    ) -> ks_session.Session:
        """A keystoneauth1 session with password auth as ``user``."""
        password, project, _ = self.USERS[user]
        auth = ks_v3.Password(
            auth_url=self.auth_url,
            username=user,
            password=password,
            project_name=project,
            user_domain_id="default",
            project_domain_id="default",
        )
        return ks_session.Session(auth=auth, timeout=timeout)

    def _identity(self, sess: Any, method: str, path: str, **kw: Any) -> Any:
        resp = sess.request(
            path,
            method,
            endpoint_filter={"service_type": "identity"},
            raise_exc=True,
            **kw,
        )
        return resp.json() if resp.content else None

    def _find_or_create(
        self, sess: Any, coll: str, name: str, body: dict[str, Any]
    ) -> str:
        found = self._identity(sess, "GET", f"/{coll}?name={name}")[coll]
        if found:
            return str(found[0]["id"])
        key = coll[:-1]
        made = self._identity(sess, "POST", f"/{coll}", json={key: body})
        return str(made[key]["id"])

    def _create_identities(self) -> None:
        sess = self.session(timeout=30)
        roles = {
            r["name"]: r["id"]
            for r in self._identity(sess, "GET", "/roles")["roles"]
        }
        for user, (password, project, user_roles) in self.USERS.items():
            pid = self._find_or_create(
                sess,
                "projects",
                project,
                {"name": project, "domain_id": "default"},
            )
            self.project_ids[project] = pid
            if user == "admin":
                continue
            uid = self._find_or_create(
                sess,
                "users",
                user,
                {
                    "name": user,
                    "password": password,
                    "domain_id": "default",
                    "default_project_id": pid,
                },
            )
            for role in user_roles:
                self._identity(
                    sess,
                    "PUT",
                    f"/projects/{pid}/users/{uid}/roles/{roles[role]}",
                )

    def register_service(self, service_type: str, name: str, url: str) -> None:
        """Put a service's public and internal endpoint in the catalog
        (replacing what an earlier run registered).
        """
        sess = self.session(timeout=30)
        sid = self._find_or_create(
            sess, "services", name, {"name": name, "type": service_type}
        )
        endpoints = self._identity(
            sess, "GET", f"/endpoints?service_id={sid}"
        )["endpoints"]
        for endpoint in endpoints:
            self._identity(sess, "DELETE", f"/endpoints/{endpoint['id']}")
        for interface in ("public", "internal"):
            self._identity(
                sess,
                "POST",
                "/endpoints",
                json={
                    "endpoint": {
                        "service_id": sid,
                        "interface": interface,
                        "url": url,
                        "region_id": self.REGION,
                    }
                },
            )


def _other_port(taken: set[int]) -> int:
    """A free port not in ``taken`` (added to it)."""
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


def _tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError):
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    return False


def _stop_pid(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a child of ours, then SIGKILL it after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RabbitServer(Server):
    """Debian's RabbitMQ 3.10 as a plain process of ours, 127.0.0.1 only.

    Everything of the broker lives under ``base``: mnesia, log, Erlang
    cookie (``HOME``), configuration (nothing read from /etc).  It runs
    with its own ``epmd`` on its own port, so it neither meets another
    run's broker nor leaves a system epmd on 0.0.0.0:4369 behind, and its
    Erlang distribution port is a free port on 127.0.0.1 too.  No
    plugins; the default ``guest`` user, which RabbitMQ lets in over
    loopback only, is what :attr:`transport_url` uses.

    :param port: the AMQP port (free by default); the distribution and
        epmd ports are picked free as well.
    """

    name = "rabbitmq"

    def __init__(self, base: Path, port: int | None = None) -> None:
        super().__init__(base, port)
        taken = {self.port}
        self.dist_port = _other_port(taken)
        self.epmd_port = _other_port(taken)
        # unique per broker: rabbitmqctl finds the node by this name
        self.nodename = f"vi{self.port}@localhost"
        self.epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The AMQP address (for messages)."""
        return f"amqp://127.0.0.1:{self.port}"

    @property
    def transport_url(self) -> str:
        """oslo.messaging's ``transport_url`` for this broker."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    def vhost_url(self, name: str) -> str:
        """A ``transport_url`` on a virtual host of its own, made if
        needed: two Cinder stacks on one broker each need one, as their
        queues (``cinder-scheduler``, ...) are named alike whatever the
        exchange, and one stack's services would take the other's casts.
        """
        if name not in self.ctl("list_vhosts", "--quiet").split():
            self.ctl("add_vhost", name)
            self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/{name}"

    def command(self) -> list[str]:
        # with RUNNING_UNDER_SYSTEMD the script `exec`s erl: our child's
        # PID is the broker's (beam.smp), so stopping by PID works
        return [str(ensure_rabbitmq())]

    def environment(self) -> dict[str, str]:
        """The environment of the broker, its epmd and ``rabbitmqctl``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            # the Erlang cookie is $HOME/.erlang.cookie
            HOME=str(self.base),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            # default would be AMQP port + 20000, maybe taken
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.etc / "enabled_plugins"),
            # RabbitMQ adds ".conf"
            RABBITMQ_CONFIG_FILE=str(self.etc / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.etc / "advanced.config"),
            # empty: nothing from /etc/rabbitmq/rabbitmq-env.conf
            RABBITMQ_CONF_ENV_FILE=str(self.etc / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.pidfile),
            RUNNING_UNDER_SYSTEMD="1",
            # every erl (the broker and rabbitmqctl's hidden node) would
            # listen for Erlang distribution on 0.0.0.0 otherwise
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
            # a failed start writes one; not into the caller's directory
            ERL_CRASH_DUMP=str(self.base / "log" / "erl_crash.dump"),
        )
        return env

    def prepare(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.etc / "enabled_plugins").write_text("[].\n")
        (self.etc / "advanced.config").write_text("[].\n")
        (self.etc / "rabbitmq-env.conf").write_text("")
        (self.etc / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.port}",
                    # guest may log in over loopback only (the default)
                    "loopback_users.guest = true",
                    # the whole log on stdout, i.e. in log_path
                    "log.console = true",
                    "log.console.level = info",
                    "log.console.use_colors = off",
                    "log.file = false",
                    "",
                ]
            )
        )

    def _answers(self) -> bool:
        # an AMQP 0-9-1 protocol header is answered with connection.start,
        # a method frame (type 1): the broker accepts clients
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=2
            ) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return sock.recv(1) == b"\x01"
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> RabbitServer:
        """Start epmd, then the broker; return when it speaks AMQP."""
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        with open(self.base / "log" / "epmd.log", "ab") as log:
            self.epmd = subprocess.Popen(
                [
                    "epmd",
                    "-address",
                    "127.0.0.1",
                    "-port",
                    str(self.epmd_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 10
            while not _tcp_open(self.epmd_port):
                if self.epmd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"epmd did not start on port {self.epmd_port}"
                    )
                time.sleep(0.05)
            super().start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` against this broker; return
        its output.
        """
        ctl = ensure_rabbitmq().parent / "rabbitmqctl"
        return subprocess.run(
            [str(ctl), "-n", self.nodename, *args],
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=timeout,
            check=True,
        ).stdout

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker (SIGTERM, a clean shutdown), then its epmd."""
        super().stop(timeout)
        if self.epmd is not None:
            _stop_pid(self.epmd, timeout)
            self.epmd = None

    def kill(self) -> None:
        """Kill the broker at once (a crash); its epmd stops cleanly."""
        super().kill()
        if self.epmd is not None:
            _stop_pid(self.epmd, 5)
            self.epmd = None


class MariaDBServer(Server):
    """Debian's MariaDB (10.11) as a plain process of ours, 127.0.0.1 only,
    for a production-shaped Glance (several workers, several nodes).

    Everything lives under ``base``: the datadir (made once by
    ``mariadb-install-db``, reused by later starts in the same ``base``),
    the socket and the pidfile.  ``--no-defaults``: nothing is read from
    /etc/mysql, and the system instance of the package is never started.
    root logs in without a password over the private socket only
    (``sql``); Glance logs in over TCP as :attr:`USER`.

    :param port: the TCP port (free by default).
    """

    name = "mariadb"
    #: the user every database made by :meth:`create_database` is granted
    #: to, from 127.0.0.1 only; the password is the same word
    USER = "glance"

    def __init__(self, base: Path, port: int | None = None) -> None:
        super().__init__(base, port)
        self.datadir = self.base / "data"
        self.socket_path = self.base / "mysqld.sock"
        #: seconds ``mariadb-install-db`` took (0 when the datadir existed)
        self.install_seconds = 0.0

    @property
    def url(self) -> str:
        """The server's address (for messages)."""
        return f"mysql://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.base / "mariadb.pid"

    def database_url(self, database: str = "glance") -> str:
        """The SQLAlchemy URL (PyMySQL) of ``database`` as :attr:`USER`."""
        return (
            f"mysql+pymysql://{self.USER}:{self.USER}@127.0.0.1:{self.port}"
            f"/{database}?charset=utf8mb4"
        )

    @staticmethod
    def _user() -> str:
        # mariadbd refuses to run as root unless told --user=root
        return pwd.getpwuid(os.geteuid()).pw_name

    def command(self) -> list[str]:
        return [
            ensure_mariadb(),
            "--no-defaults",
            f"--user={self._user()}",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pidfile}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            # no DNS lookups of 127.0.0.1 at each login
            "--skip-name-resolve",
            # each Glance worker keeps a pool of up to 15 (GlanceServer
            # pins it): 2 nodes x 4 workers x 15 = 120 is close to the
            # default limit, 151
            "--max-connections=500",
            "--innodb-buffer-pool-size=128M",
            # a test database need not survive a power cut: no fsync per
            # commit
            "--innodb-flush-log-at-trx-commit=2",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            # no --log-error: the error log goes to stderr, i.e. log_path
        ]

    def prepare(self) -> None:
        if len(str(self.socket_path).encode()) > 107:
            raise RuntimeError(
                f"socket path too long for AF_UNIX: {self.socket_path}"
            )
        if (self.datadir / "mysql").is_dir():
            return
        t0 = time.monotonic()
        shutil.rmtree(self.datadir, ignore_errors=True)  # a half-made one
        log = self.base / "log" / "install-db.log"
        with open(log, "wb") as out:
            rc = subprocess.run(
                [
                    _sbin_which("mariadb-install-db") or "mariadb-install-db",
                    "--no-defaults",
                    f"--user={self._user()}",
                    f"--datadir={self.datadir}",
                    # root without password, over the private socket
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise RuntimeError(
                "mariadb-install-db failed:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        self.install_seconds = time.monotonic() - t0

    def _answers(self) -> bool:
        # the server speaks first: a handshake packet (4-byte header, then
        # protocol version 10); an error packet (0xff) or nothing is "no"
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=2
            ) as sock:
                head = sock.recv(5)
                return len(head) == 5 and head[4] == 10
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> MariaDBServer:
        """Make the datadir if needed, start; return when it accepts
        logins and database ``glance`` exists.
        """
        super().start(timeout)
        t0 = time.monotonic()
        self.create_database("glance")
        self.startup_seconds += time.monotonic() - t0
        return self

    def sql(self, statements: str, timeout: float = 30.0) -> str:
        """Run SQL as root over the socket; return the client's output
        (tab-separated, no column names).

        :raises RuntimeError: the client failed; the message has its error.
        """
        client = _sbin_which("mariadb") or _sbin_which("mysql") or "mariadb"
        done = subprocess.run(
            [
                client,
                "--no-defaults",
                f"--socket={self.socket_path}",
                "--user=root",
                "--batch",
                "--skip-column-names",
            ],
            input=statements,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"SQL failed on {self.url}: {done.stderr}")
        return done.stdout

    def create_database(self, database: str) -> str:
        """Create ``database`` (if missing) for :attr:`USER`; return its
        :meth:`database_url`.
        """
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", database):
            raise ValueError(f"not a plain database name: {database!r}")
        user = f"'{self.USER}'@'127.0.0.1'"
        self.sql(
            f"CREATE DATABASE IF NOT EXISTS `{database}` "
            "CHARACTER SET utf8mb4;\n"
            f"CREATE USER IF NOT EXISTS {user} "
            f"IDENTIFIED BY '{self.USER}';\n"
            f"GRANT ALL ON `{database}`.* TO {user};\n"
        )
        return self.database_url(database)

    def drop_database(self, database: str) -> None:
        """Drop ``database`` if it exists."""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", database):
            raise ValueError(f"not a plain database name: {database!r}")
        self.sql(f"DROP DATABASE IF EXISTS `{database}`;\n")


class HAProxyServer(Server):
    """Debian's haproxy (2.6) in front of servers on 127.0.0.1: HTTP mode,
    one front end on :attr:`port`, one backend ``glance`` with a server
    per entry of ``backends``, a stats page on :attr:`stats_port` and an
    admin socket, config from ``templates/haproxy.cfg``.

    The health check defaults are the ones that hold under upload load
    (the reference notes' problem #1: with ``timeout check`` = ``inter`` =
    1 s, checks queued behind busy upload workers put every node DOWN and
    clients got 503): a 5 s check timeout, every 2 s, DOWN after 3
    failures, UP after 2 successes.  A refused connect is retried on
    another server at once (``option redispatch``), so a killed node is
    invisible to clients even before it is marked DOWN.

    :param backends: server name -> port on 127.0.0.1, in order.
    :param balance: haproxy's algorithm (``roundrobin``; ``random`` mixes
        a client's requests over the nodes, see the notes' pitfall 7).
    :param check_path: the path of the HTTP health check; None checks
        that the port accepts a connection only (which uWSGI's listen
        queue does even when every worker is busy).
    :param timeout: client and server inactivity limit, seconds.
    """

    name = "haproxy"
    BACKEND = "glance"

    def __init__(
        self,
        base: Path,
        backends: Mapping[str, int],
        port: int | None = None,
        *,
        balance: str = "roundrobin",
        check_path: str | None = "/healthcheck",
        check_inter: float = 2.0,
        check_fall: int = 3,
        check_rise: int = 2,
        check_timeout: float = 5.0,
        timeout: float = 300.0,
    ) -> None:
        super().__init__(base, port)
        self.backends = dict(backends)
        self.stats_port = _other_port({self.port, *self.backends.values()})
        self.balance = balance
        self.check_path = check_path
        self.check_inter = check_inter
        self.check_fall = check_fall
        self.check_rise = check_rise
        self.check_timeout = check_timeout
        self.timeout = timeout

    @property
    def config(self) -> Path:
        return self.etc / "haproxy.cfg"

    @property
    def stats_url(self) -> str:
        """The stats page (``;csv`` appended gives CSV)."""
        return f"http://127.0.0.1:{self.stats_port}/stats"

    @property
    def admin_socket(self) -> Path:
        return self.base / "haproxy.sock"

    def command(self) -> list[str]:
        # -db: foreground, no daemon, no master-worker: our child's PID is
        # haproxy's, and "log stdout" goes to log_path
        return [
            ensure_haproxy(),
            "-db",
            "-f",
            str(self.config),
            "-p",
            str(self.pidfile),
        ]

    def prepare(self) -> None:
        if not self.backends:
            raise ValueError("haproxy needs at least one backend server")
        if len(str(self.admin_socket).encode()) > 107:
            raise RuntimeError(
                f"socket path too long for AF_UNIX: {self.admin_socket}"
            )
        check = ""
        if self.check_path is not None:
            check = (
                f"    option httpchk GET {self.check_path}\n"
                "    http-check expect status 200"
            )
        values = {
            "BASE": str(self.base),
            "PORT": str(self.port),
            "STATS_PORT": str(self.stats_port),
            "BALANCE": self.balance,
            "CHECK": check,
            "INTER": f"{self.check_inter:g}",
            "FALL": str(self.check_fall),
            "RISE": str(self.check_rise),
            "CHECK_TIMEOUT": f"{self.check_timeout:g}",
            "TIMEOUT": f"{self.timeout:g}",
            "SERVERS": "\n".join(
                f"    server {name} 127.0.0.1:{port}"
                for name, port in self.backends.items()
            ),
        }
        _render("haproxy.cfg", self.config, values)
        done = subprocess.run(
            [ensure_haproxy(), "-c", "-q", "-f", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(
                f"haproxy refuses {self.config}:\n{done.stdout}{done.stderr}"
            )

    def _answers(self) -> bool:
        # the front end would answer 503 while no server is UP yet; the
        # stats page answers as soon as haproxy runs
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                self.stats_url + ";csv", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> HAProxyServer:
        """Start; return when every backend server is UP (its first
        ``rise`` checks passed).
        """
        t0 = time.monotonic()
        super().start(timeout)
        try:
            self.wait_states(
                dict.fromkeys(self.backends, "UP"),
                max(1.0, timeout - (time.monotonic() - t0)),
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stats(self) -> dict[str, dict[str, str]]:
        """The stats of the backend's servers: name -> the CSV columns
        (``status``: UP, DOWN, ``UP 1/3`` (going down), MAINT...;
        ``scur``: connections now; ``stot``: connections in all;
        ``chkdown``: UP->DOWN transitions; ``lastchg``: seconds since the
        last change).
        """
        with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
            self.stats_url + ";csv", timeout=5
        ) as resp:
            text = resp.read().decode()
        # the header line is "# pxname,svname,...": a comment to csv
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row.get("pxname") == self.BACKEND
            and row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def states(self) -> dict[str, str]:
        """Each backend server's status (UP, DOWN, ``UP 1/3``, ...)."""
        return {name: row["status"] for name, row in self.stats().items()}

    def wait_states(
        self, wanted: Mapping[str, str], timeout: float = 30.0
    ) -> None:
        """Wait until each named server has the given status.

        :raises RuntimeError: not in time; the message has the states.
        """
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                states = self.states()
                if all(states.get(n) == s for n, s in wanted.items()):
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"haproxy servers not {dict(wanted)} within {timeout}s: "
            f"{states}\n{self.log_tail()}"
        )

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one command to the admin socket (``disable server
        glance/a``, ``show servers state``...); return the answer.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")


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
PROJECT_ID = "6d9c5a1e0f2b4c3d8e7f6a5b4c3d2e1f"


class CinderServer(Server):
    """cinder-api 29 alone (no scheduler or volume service): sqlite,
    ``auth_strategy = noauth``, ``transport_url = fake://``, asking the
    Glance at ``glance_url``.

    :param with_filter: put our ``store_validation`` filter in the API
        pipeline; False runs upstream's pipeline unchanged.
    :param filter_options: paste options of the filter; by default it
        reaches Glance at ``glance_url``.
    :param wsgi_server: ``"uwsgi"`` (Cinder's own choice in devstack), or
        ``"gunicorn"``, which passes chunked request bodies (no
        Content-Length) to the application with ``wsgi.input_terminated``
        set, as mod_wsgi does with ``WSGIChunkedRequest On``.
    """

    name = "cinder-api"
    ready_status = 300

    def __init__(
        self,
        base: Path,
        glance_url: str,
        port: int | None = None,
        *,
        with_filter: bool = True,
        filter_options: dict[str, str] | None = None,
        keystone: KeystoneServer | None = None,
        wsgi_server: str = "uwsgi",
    ) -> None:
        super().__init__(base, port)
        if wsgi_server not in ("uwsgi", "gunicorn"):
            raise ValueError(f"unknown WSGI server {wsgi_server!r}")
        self.wsgi_server = wsgi_server
        self.glance_url = glance_url
        self.with_filter = with_filter
        #: with a Keystone: auth_strategy = keystone (authtoken and
        #: keystonecontext before our filter)
        self.keystone = keystone
        self.filter_options = (
            {"glance_endpoint": glance_url}
            if filter_options is None
            else filter_options
        )

    def venv(self) -> Path:
        return ensure_venv("cinder")

    @property
    def api_url(self) -> str:
        """The v3 API root with the (noauth) test project id."""
        return f"{self.url}/v3/{PROJECT_ID}"

    @property
    def headers(self) -> dict[str, str]:
        """Headers of an admin request (noauth)."""
        return {"X-Auth-Token": f"admin:{PROJECT_ID}"}

    def prepare(self) -> None:
        for sub in ("state", "coord"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # the directory that holds the volume_image package: the worker
        # imports the filter from the source under test
        source_root = Path(__file__).resolve().parents[1]
        values = {
            "BASE": str(self.base),
            "ETC": str(self.etc),
            "PORT": str(self.port),
            "VENV": str(self.venv()),
            "GLANCE_URL": self.glance_url,
            "PYTHONPATH": str(source_root),
            "FILTER": "store_validation" if self.with_filter else "",
            "FILTER_OPTIONS": "\n".join(
                f"{k} = {v}" for k, v in self.filter_options.items()
            ),
        }
        if self.keystone is None:
            values["AUTH"] = "noauth"
            values["AUTHTOKEN"] = ""
        else:
            values["AUTH"] = "keystone"
            values["AUTHTOKEN"] = self.keystone.authtoken_section(
                "cinder", 300
            )
        self._write_conf(values)
        _render("cinder-uwsgi.ini", self.ini, values)
        _render("cinder_gunicorn_app.py", self.etc / "cinder_app.py", values)
        _render("cinder-api-paste.ini", self.etc / "api-paste.ini", values)
        self._manage_db("cinder-manage", "cinder.conf", "db", "sync")

    def command(self) -> list[str]:
        if self.wsgi_server == "uwsgi":
            return super().command()
        source_root = Path(__file__).resolve().parents[1]
        return [
            str(self.venv() / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--pid",
            str(self.pidfile),
            "--pythonpath",
            f"{self.etc},{source_root}",
            "--graceful-timeout",
            "5",
            "cinder_app:application",
        ]

    def _write_conf(self, values: dict[str, str]) -> None:
        """Write ``etc/cinder.conf``."""
        _render("cinder.conf", self.etc / "cinder.conf", values)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # our test run's "error" filter must not reach cinder's warnings
        env.pop("PYTHONWARNINGS", None)
        return env


#: the test volume driver (sparse files), see harness.filedriver
FILE_DRIVER = "harness.filedriver.FileVolumeDriver"


def _ini_text(header: str, sections: dict[str, dict[str, str]]) -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, options in sections.items():
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


class CinderStack(CinderServer):
    """The whole of Cinder 29: cinder-api (uWSGI, as :class:`CinderServer`,
    our filter in its pipeline unless ``with_filter=False``),
    cinder-scheduler and cinder-volume, over the RabbitMQ at
    ``transport_url``, sharing one sqlite database and one ``cinder.conf``
    (see :meth:`config_sections`); everything on 127.0.0.1 and under
    ``base``.

    cinder-volume runs two backends of the test file driver
    (:data:`FILE_DRIVER`) in one service, ``upstream`` (Cinder's own
    upload path) and ``ours`` (``ours_driver``, e.g. volume_image's
    driver wrapping ``ours_wrapped_driver``); pin a volume to one with a
    type whose ``volume_backend_name`` is the backend's name
    (:meth:`~harness.cinderapi.CinderRest.backend_type`).
    Volume bytes are in :meth:`volume_file`.

    cinder-volume reads a second config file that sets ``auth_strategy =
    keystone`` (``volume_auth_strategy``): with noauth it builds a
    glanceclient that drops the ``x-image-meta-store`` header, and every
    image lands in Glance's default store.  No Keystone is contacted: the
    volume service never validates tokens, it forwards the caller's.

    :param glance_num_retries: Cinder's retries of a failed Glance call
        (upstream's default is 3, one second apart).
    :param default_options: more ``[DEFAULT]`` options (they win).
    :param backend_options: more options per backend section
        (``{"ours": {...}}``).
    :param sections: more sections, or options merged into one.
    :param probe: at start, create and delete one volume per backend
        (about 1 s): proof that the scheduler places volumes on both
        (it does so only once it has every backend's capabilities, which
        the services table does not tell).

    The three processes share the sqlite file through a ``sitecustomize``
    (template ``cinder-sitecustomize.py``) that makes every transaction
    ``BEGIN IMMEDIATE``: with oslo.db's deferred ``BEGIN``, two things at
    once (a volume created during another's creation) fail with
    "database is locked".
    """

    name = "cinder-stack"
    BACKENDS = ("upstream", "ours")
    #: the services' host; backends are HOST@upstream, HOST@ours
    HOST = "vi-stack"
    #: logged once per backend when cinder-volume serves it
    VOLUME_READY = "Driver post RPC initialization completed"
    SCHEDULER_READY = "Starting cinder-scheduler node"

    def __init__(
        self,
        base: Path,
        glance_url: str,
        transport_url: str,
        port: int | None = None,
        *,
        ours_driver: str = FILE_DRIVER,
        ours_wrapped_driver: str | None = None,
        with_filter: bool = True,
        filter_options: dict[str, str] | None = None,
        glance_num_retries: int = 0,
        volume_auth_strategy: str = "keystone",
        default_options: dict[str, str] | None = None,
        backend_options: dict[str, dict[str, str]] | None = None,
        sections: dict[str, dict[str, str]] | None = None,
        probe: bool = True,
        keystone: KeystoneServer | None = None,
    ) -> None:
        super().__init__(
            base,
            glance_url,
            port,
            with_filter=with_filter,
            filter_options=filter_options,
            keystone=keystone,
        )
        # cinder-api's own log (uWSGI's request lines and oslo.log's)
        self.log_path = self.base / "log" / "cinder-api.log"
        self.transport_url = transport_url
        self.ours_driver = ours_driver
        self.ours_wrapped_driver = ours_wrapped_driver
        self.glance_num_retries = glance_num_retries
        self.volume_auth_strategy = volume_auth_strategy
        self.default_options = dict(default_options or {})
        self.backend_options = {
            k: dict(v) for k, v in (backend_options or {}).items()
        }
        self.extra_sections = {k: dict(v) for k, v in (sections or {}).items()}
        self.probe = probe
        #: cinder-scheduler and cinder-volume, by service name
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self._log_marks: dict[str, int] = {}

    @property
    def volumes_dir(self) -> Path:
        """Where the file driver keeps the volumes of both backends."""
        return self.base / "volumes"

    def volume_file(self, volume_id: str) -> Path:
        """The file holding volume ``volume_id``'s bytes (as
        ``filedriver.volume_file`` names it).
        """
        return self.volumes_dir / f"volume-{volume_id}"

    def service_log(self, service: str) -> Path:
        """``cinder-api``, ``cinder-scheduler`` or ``cinder-volume``'s
        log.
        """
        return self.base / "log" / f"{service}.log"

    def rest(
        self, microversion: str = "3.3", user: str = "admin"
    ) -> cinderapi.CinderRest:
        """A REST client of this stack's API: admin with noauth, or
        ``user`` with a Keystone token in his project.
        """
        if self.keystone is None:
            return cinderapi.CinderRest(
                self.url, PROJECT_ID, microversion=microversion
            )
        project = self.keystone.USERS[user][1]
        return cinderapi.CinderRest(
            self.url,
            self.keystone.project_ids[project],
            microversion=microversion,
            token=str(self.keystone.session(user).get_token()),
        )

    def config_sections(self) -> dict[str, dict[str, str]]:
        """The sections of the shared ``cinder.conf``."""
        venv = self.venv()
        conf = self.etc / "cinder.conf"
        # privsep daemons (os-brick's "dd" check when the file is
        # attached, cinder's sys_admin context): the default command is
        # "sudo cinder-rootwrap ... privsep-helper"; we are root without
        # sudo.  helper_command replaces all of it, config file included.
        helper = f"{venv}/bin/privsep-helper --config-file {conf}"
        default = {
            # the API: no Keystone; cinder-volume overrides this, see
            # cinder-volume.conf
            "auth_strategy": "noauth" if self.keystone is None else "keystone",
            "transport_url": self.transport_url,
            # cinder 29 has no [glance] api_servers; this is the option
            "glance_api_servers": self.glance_url,
            "glance_num_retries": str(self.glance_num_retries),
            "api_paste_config": f"{self.etc}/api-paste.ini",
            "resource_query_filters_file": (
                f"{venv}/etc/cinder/resource_filters.json"
            ),
            "state_path": f"{self.base}/state",
            "host": self.HOST,
            "my_ip": "127.0.0.1",
            "debug": "true",
            # each service logs to <log_dir>/<its name>.log (the API is
            # given --log-file: under uWSGI the name would be a frame's)
            "log_dir": f"{self.base}/log",
            "use_stderr": "false",
            "enabled_backends": ",".join(self.BACKENDS),
            # the volume service reports every 10 s (default 60), and
            # its capabilities reach the scheduler as often
            "report_interval": "10",
            "periodic_interval": "10",
            # lets uploads use container_format=compressed (else 400)
            "allow_compression_on_image_upload": "true",
            # no quota: a test run makes more than 10 volumes.  db sync
            # writes the "default" quota class (10 volumes), which wins
            # over quota_* unless use_default_quota_class is false
            "use_default_quota_class": "false",
            "quota_volumes": "-1",
            "quota_snapshots": "-1",
            "quota_gigabytes": "-1",
            "quota_backups": "-1",
            "quota_backup_gigabytes": "-1",
            "quota_groups": "-1",
        }
        default.update(self.default_options)
        sections: dict[str, dict[str, str]] = {
            "DEFAULT": default,
            "database": {"connection": f"sqlite:///{self.base}/cinder.sqlite"},
            "oslo_concurrency": {"lock_path": f"{self.base}/locks"},
            "coordination": {"backend_url": f"file://{self.base}/coord"},
            "oslo_messaging_notifications": {"driver": "noop"},
            "privsep_osbrick": {"helper_command": helper},
            "cinder_sys_admin": {"helper_command": helper},
        }
        if self.keystone is not None:
            # the API validates tokens; cinder-volume only forwards them
            lines = self.keystone.authtoken_section("cinder", 300)
            sections["keystone_authtoken"] = dict(
                line.split(" = ", 1) for line in lines.splitlines()[1:]
            )
        drivers = {"upstream": FILE_DRIVER, "ours": self.ours_driver}
        for backend in self.BACKENDS:
            options = {"volume_driver": drivers[backend]}
            if backend == "ours" and self.ours_wrapped_driver:
                options["volume_image_wrapped_driver"] = (
                    self.ours_wrapped_driver
                )
            options["volume_backend_name"] = backend
            options["file_volume_dir"] = str(self.volumes_dir)
            options.update(self.backend_options.get(backend, {}))
            sections[backend] = options
        for name, options in self.extra_sections.items():
            sections.setdefault(name, {}).update(options)
        return sections

    def _write_conf(self, values: dict[str, str]) -> None:
        for sub in ("state", "coord", "volumes"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.etc / "cinder.conf").write_text(
            _ini_text(
                "cinder 29.0.0: api + scheduler + volume over RabbitMQ, "
                "sqlite.\nRendered by "
                "harness.launcher.CinderStack.",
                self.config_sections(),
            )
        )
        # sqlite shared by three processes: see the template's docstring
        (self.base / "site").mkdir(exist_ok=True)
        _render(
            "cinder-sitecustomize.py",
            self.base / "site" / "sitecustomize.py",
            {},
        )
        # read by cinder-volume only, after cinder.conf: with noauth,
        # cinder builds a glanceclient that drops x-image-meta-store
        (self.etc / "cinder-volume.conf").write_text(
            _ini_text(
                "cinder-volume only (after cinder.conf).",
                {"DEFAULT": {"auth_strategy": self.volume_auth_strategy}},
            )
        )

    def environment(self) -> dict[str, str]:
        env = super().environment()
        # the file driver (and volume_image's) come from the source
        # under test; no .pyc of the cinder venv's Python in the tree.
        # site/ holds the sitecustomize that makes sqlite queue writers
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), str(self.base / "site")]
        )
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # cinder-volume runs privsep-helper and cinder-rootwrap by name
        env["PATH"] = f"{self.venv() / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def prepare(self) -> None:
        super().prepare()
        # cinder-volume starts here, right after the database sync and
        # before the API, so that their imports overlap; the scheduler
        # starts once the backends are served, see start()
        self._spawn(
            "cinder-volume",
            "--config-file",
            str(self.etc / "cinder-volume.conf"),
        )

    def _spawn(self, service: str, *extra: str) -> None:
        # readiness is judged from the lines logged after this point
        # (the services table says "up" for a minute after a stop)
        log = self.service_log(service)
        self._log_marks[service] = log.stat().st_size if log.exists() else 0
        with open(self.base / "log" / f"{service}.stdout", "ab") as out:
            self.services[service] = subprocess.Popen(
                [
                    str(self.venv() / "bin" / service),
                    "--config-file",
                    str(self.etc / "cinder.conf"),
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )

    def _new_log(self, service: str) -> str:
        try:
            with open(self.service_log(service), "rb") as log:
                log.seek(self._log_marks.get(service, 0))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _volume_ready(self) -> bool:
        served = self._new_log("cinder-volume").count(self.VOLUME_READY)
        return served >= len(self.BACKENDS)

    def _scheduler_ready(self) -> bool:
        text = self._new_log("cinder-scheduler")
        if self.SCHEDULER_READY not in text:
            return False
        if self.config_sections()["DEFAULT"].get("debug") != "true":
            return True  # capabilities are logged at debug level only
        return all(
            re.search(
                rf"Received volume service update from\s+"
                rf"{re.escape(self.HOST)}@{backend}\b",
                text,
            )
            for backend in self.BACKENDS
        )

    def _services_up(self) -> bool:
        wanted = {("cinder-scheduler", self.HOST)} | {
            ("cinder-volume", f"{self.HOST}@{b}") for b in self.BACKENDS
        }
        up = {
            (s["binary"], s["host"])
            for s in self.rest().services()
            if s["state"] == "up"
        }
        return wanted <= up

    def _wait_for(
        self, ready: Callable[[], bool], what: str, deadline: float
    ) -> None:
        while not ready():
            for service, proc in self.services.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{service} exited ({proc.returncode}) during "
                        f"start-up:\n{self.log_tail()}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not in time:\n{self.log_tail()}")
            time.sleep(0.2)

    def start(self, timeout: float = 180.0) -> CinderStack:
        """Start the three services; return when the API answers, both
        backends and the scheduler are up (in new log lines and in
        ``os-services``), the scheduler has both backends' capabilities
        and, with ``probe``, a volume was created on each backend.

        cinder-volume starts first: the scheduler asks every volume
        service for its capabilities when it starts, and otherwise gets
        them only with the next periodic report (after up to two
        minutes); a backend that started first but published before the
        scheduler listened would be missing until then.

        :raises RuntimeError: a service exited or was not ready in time;
            the message ends with the logs' tails.  Everything started
            is stopped again.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            super().start(timeout)
            self._wait_for(
                self._volume_ready, "cinder-volume serving both", deadline
            )
            self._spawn("cinder-scheduler")
            self._wait_for(
                self._scheduler_ready,
                "cinder-scheduler with both backends' capabilities",
                deadline,
            )
            self._wait_for(self._services_up, "os-services all up", deadline)
            if self.probe:
                self.wait_schedulable(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def wait_schedulable(self, timeout: float = 90.0) -> None:
        """Create a 1 GiB volume on each backend, wait until both are
        ``available``, delete them: then the scheduler has every
        backend's capabilities (it holds requests until it has them, up
        to ``scheduler_driver_init_wait_time``).
        """
        rest = self.rest()
        volumes = []
        for backend in self.BACKENDS:
            name = f"probe-{backend}"
            vtype = rest.find_type(name) or rest.create_type(
                name, {"volume_backend_name": backend}
            )
            volumes.append(
                rest.create_volume(1, volume_type=vtype["id"], name=name)
            )
        deadline = time.monotonic() + timeout
        for volume in volumes:
            rest.wait_volume(
                volume["id"], timeout=max(1.0, deadline - time.monotonic())
            )
        for volume in volumes:
            rest.delete_volume(volume["id"], wait=False)
        for volume in volumes:
            while rest.request("GET", f"/volumes/{volume['id']}").ok:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"probe volume {volume['id']} stays")
                time.sleep(0.2)

    def service_pids(self) -> dict[str, int]:
        """PIDs of the running services (the API's is uWSGI's master)."""
        pids = {
            name: proc.pid
            for name, proc in self.services.items()
            if proc.poll() is None
        }
        if self.pid is not None:
            pids["cinder-api"] = self.pid
        return pids

    def _privsep_daemons(self) -> list[int]:
        # privsep daemons double-fork (their parent is then PID 1), so
        # they are found by their command line: privsep-helper with OUR
        # config file, never by name alone
        conf = str(self.etc / "cinder.conf")
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            argv = _cmdline(int(entry.name))
            if conf in argv and any(
                Path(a).name == "privsep-helper" for a in argv[:2]
            ):
                found.append(int(entry.name))
        return found

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every service (by PID), wait, SIGKILL what is left:
        cinder-volume's per-backend children, then privsep daemons of
        this stack that did not exit with their cinder-volume.
        """
        children = [
            pid
            for proc in self.services.values()
            if proc.poll() is None
            for pid in self._children(proc.pid)
        ]
        privsep = self._privsep_daemons()
        for proc in self.services.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        super().stop(timeout)  # the API, meanwhile
        for proc in self.services.values():
            _stop_pid(proc, timeout)
        self.services.clear()
        self._reap(children)
        self._reap_privsep(privsep)

    def _reap_privsep(self, pids: list[int]) -> None:
        """Give privsep daemons 5 s to exit after their cinder-volume
        (they normally do: their socket closed), then SIGTERM, then
        SIGKILL, each time only if the PID still runs with our config.
        """
        conf = str(self.etc / "cinder.conf")
        for sig, grace in ((None, 5.0), (signal.SIGTERM, 2.0)):
            if sig is not None:
                for pid in pids:
                    if conf in _cmdline(pid):  # PIDs are reused
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if conf in _cmdline(p)]
                time.sleep(0.1)
        for pid in pids:
            if conf in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """Kill every service at once (a crash of the whole node)."""
        children = [
            pid
            for proc in self.services.values()
            if proc.poll() is None
            for pid in self._children(proc.pid)
        ]
        privsep = self._privsep_daemons()
        for proc in self.services.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.services.clear()
        self._reap(children)
        super().kill()
        self._reap_privsep(privsep)

    @staticmethod
    def _children(pid: int) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of cinder-volume's log, and fewer of the
        scheduler's, the API's and the services' stdout (tracebacks from
        before logging was set up).
        """
        parts = []
        for path, count in (
            (self.service_log("cinder-volume"), lines),
            (self.service_log("cinder-scheduler"), max(5, lines // 4)),
            (self.log_path, max(5, lines // 4)),
            (self.base / "log" / "cinder-volume.stdout", 10),
            (self.base / "log" / "cinder-scheduler.stdout", 10),
        ):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                tail = "\n".join(text.splitlines()[-count:])
                parts.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(parts)

    def cli(
        self,
        *args: str,
        microversion: str = "3.1",
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``cinder`` command (python-cinderclient, the
        "clients" virtualenv) against this stack, as admin with noauth.

        ``openstack`` does not work against a noauth cinder-api (its
        version discovery request carries no token, and noauth answers
        it with an empty 204); ``cinder``'s noauth plugin appends the
        project id to the ``/v3`` endpoint itself.

        :raises subprocess.CalledProcessError: with ``check``, a non-zero
            exit (its output in ``stdout``/``stderr``).
        """
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OS_", "CINDER_"))
        }
        env.pop("PYTHONWARNINGS", None)
        return subprocess.run(
            [
                str(ensure_venv("clients") / "bin" / "cinder"),
                "--os-auth-type",
                "noauth",
                "--os-user-id",
                "admin",
                "--os-project-id",
                PROJECT_ID,
                "--os-endpoint",
                f"{self.url}/v3",
                "--os-volume-api-version",
                microversion,
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=check,
        )


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
