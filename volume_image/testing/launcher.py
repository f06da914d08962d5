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
import hashlib
import os
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

__all__ = [
    "PROJECT_ID",
    "VENVS",
    "CinderServer",
    "GlanceServer",
    "Server",
    "ensure_qemu_img",
    "ensure_venv",
    "free_port",
]

# Pinned: the versions whose behaviour the tests document.
VENVS: dict[str, list[str]] = {
    "glance": [
        "glance==33.0.0",
        "glance-store==5.7.0",
        "python-glanceclient==4.13.0",
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
    ) -> None:
        super().__init__(base, port)
        self.multistore = multistore
        self.processes = processes
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
        with open(self.base / "log" / "db_sync.log", "wb") as log:
            rc = subprocess.run(
                [
                    str(self.venv() / "bin" / "glance-manage"),
                    "--config-file",
                    str(self.etc / "glance-api.conf"),
                    "db_sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc:
            raise RuntimeError(
                "glance-manage db_sync failed:\n"
                + (self.base / "log" / "db_sync.log").read_text()[-3000:]
            )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, OS_GLANCE_CONFIG_DIR=str(self.etc))
        env.pop("PYTHONWARNINGS", None)
        return env


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
    ) -> None:
        super().__init__(base, port)
        self.glance_url = glance_url
        self.with_filter = with_filter
        self.filter_options = (
            {"glance_endpoint": glance_url}
            if filter_options is None
            else filter_options
        )

    def venv(self) -> Path:
        return ensure_venv("cinder")

    @property
    def api_url(self) -> str:
        """The v3 API root with the test project id."""
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
        _render("cinder.conf", self.etc / "cinder.conf", values)
        _render("cinder-uwsgi.ini", self.ini, values)
        _render("cinder-api-paste.ini", self.etc / "api-paste.ini", values)
        log = self.base / "log" / "db_sync.log"
        with open(log, "wb") as out:
            rc = subprocess.run(
                [
                    str(self.venv() / "bin" / "cinder-manage"),
                    "--config-file",
                    str(self.etc / "cinder.conf"),
                    "db",
                    "sync",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc:
            raise RuntimeError(
                "cinder-manage db sync failed:\n"
                + log.read_text(errors="replace")[-3000:]
            )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # our test run's "error" filter must not reach cinder's warnings
        env.pop("PYTHONWARNINGS", None)
        return env


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
        server = GlanceServer(Path(argv[1]))
        server.start()
        print(f"Glance on {server.url} (pid {server.pid}); Ctrl-C stops it")
        try:
            while server.pid:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0
    if argv[0] == "cinder" and len(argv) == 3:
        cinder = CinderServer(Path(argv[1]), argv[2])
        cinder.start()
        print(f"cinder-api on {cinder.api_url} (pid {cinder.pid}); Ctrl-C")
        try:
            while cinder.pid:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            cinder.stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
