"""Install and run the real servers that tests, the demo and the benchmarks
use: Glance 33 and cinder-api 29 under uWSGI, on 127.0.0.1 only.

Each server gets its own virtualenv, built once from PyPI and cached under
``$VOLUME_IMAGE_CACHE`` (default ``~/.cache/volume_image``); the project's
own environment never sees their packages.  Servers are started in their
own session and stopped by the PID they wrote, never by name.

Command line::

    python -m volume_image.testing.launcher setup      # venvs + qemu-img
    python -m volume_image.testing.launcher glance DIR  # run until Ctrl-C
    python -m volume_image.testing.launcher cinder DIR GLANCE_URL
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3 as ks_v3

__all__ = [
    "PROJECT_ID",
    "VENVS",
    "CinderServer",
    "GlanceServer",
    "KeystoneServer",
    "Server",
    "ensure_qemu_img",
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
    ],
    "cinder": [
        "cinder==29.0.0",
        "uwsgi==2.0.31",
    ],
}

_TEMPLATES = resources.files("volume_image.testing") / "templates"


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
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "qemu-img is missing: install the qemu-utils package"
        )
    _say("installing qemu-utils (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "qemu-utils"], check=True, env=env
    )
    found = shutil.which("qemu-img")
    if not found:
        raise RuntimeError("qemu-utils installed but qemu-img not found")
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
    ) -> None:
        super().__init__(base, port)
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
        return self.base / "stores" / store

    def prepare(self) -> None:
        for sub in (
            "stores/fast",
            "stores/cheap",
            "stores/single",
            "staging",
            "tasks",
        ):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "BASE": str(self.base),
            "ETC": str(self.etc),
            "PORT": str(self.port),
            "PROCESSES": str(self.processes),
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
        stores_text = (_TEMPLATES / stores_tpl).read_text()
        values["STORES"] = stores_text.replace("@BASE@", str(self.base))
        _render("glance-api.conf", self.etc / "glance-api.conf", values)
        _render("glance-uwsgi.ini", self.ini, values)
        _render(
            "glance-api-paste.ini", self.etc / "glance-api-paste.ini", values
        )
        _render("policy.yaml", self.etc / "policy.yaml", values)
        _render("glance_devauth.py", self.etc / "glance_devauth.py", values)
        self._manage_db("glance-manage", "glance-api.conf", "db_sync")

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
    ) -> None:
        super().__init__(base, port)
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
        source_root = Path(__file__).resolve().parents[2]
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
        _render("cinder.conf", self.etc / "cinder.conf", values)
        _render("cinder-uwsgi.ini", self.ini, values)
        _render("cinder-api-paste.ini", self.etc / "api-paste.ini", values)
        self._manage_db("cinder-manage", "cinder.conf", "db", "sync")

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # our test run's "error" filter must not reach cinder's warnings
        env.pop("PYTHONWARNINGS", None)
        return env


def _serve(server: Server) -> int:
    """Run ``server`` until Ctrl-C."""
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


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "setup":
        names = argv[1:] or list(VENVS)
        for name in names:
            print(f"{name}: {ensure_venv(name)}")
        print(f"qemu-img: {ensure_qemu_img()}")
        return 0
    if argv[0] == "glance" and len(argv) == 2:
        return _serve(GlanceServer(Path(argv[1])))
    if argv[0] == "cinder" and len(argv) == 3:
        return _serve(CinderServer(Path(argv[1]), argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
