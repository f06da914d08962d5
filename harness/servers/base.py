"""What every server shares: the pinned virtualenvs, Debian packages,
free ports, templates and the :class:`Server` base (own session, stopped
by PID).
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
from importlib import resources
from pathlib import Path

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

    def _manage_db(
        self,
        tool: str,
        conf: str,
        *command: str,
        sqlite: Path | None = None,
    ) -> None:
        """Run the server's ``<tool> --config-file <conf> <command>``
        (its database sync), logging to ``log/db_sync.log``.

        With ``sqlite`` (the server's sqlite file), a migrated database is
        a copy of a template made once per virtualenv and command under
        the cache (``db-templates/``): the migrations ran there, and a
        server start costs a file copy instead of 1.5-2 s of CPU.  A file
        already in place (a restart) is left as it is.

        :raises RuntimeError: it failed; the message ends with its log.
        """
        if sqlite is not None:
            if sqlite.exists():
                return
            key = hashlib.sha256(
                "\0".join([str(self.venv()), tool, *command]).encode()
            ).hexdigest()[:12]
            template = cache_dir() / "db-templates" / f"{tool}-{key}.sqlite"
            if template.exists():
                shutil.copyfile(template, sqlite)
                return
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
        if sqlite is not None:
            template.parent.mkdir(parents=True, exist_ok=True)
            # another process may be writing the same template: the
            # rename makes a whole file appear, never a half-copied one
            partial = template.with_suffix(f".{os.getpid()}.partial")
            shutil.copyfile(sqlite, partial)
            os.replace(partial, template)

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
