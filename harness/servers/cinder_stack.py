"""The whole of Cinder 29: api, scheduler and volume over RabbitMQ,
with the test file driver or any other backend.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness import cinderapi
from harness.servers.base import _render, _stop_pid, ensure_venv
from harness.servers.cinder import PROJECT_ID, CinderServer
from harness.servers.keystone import KeystoneServer

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

    :param upstream_driver: the ``upstream`` backend's driver (Cinder's
        ``RBDDriver`` for the Ceph tests).
    :param environ: more environment for the services, e.g.
        ``CEPH_ARGS=--keyring=...`` (os-brick writes its own ceph.conf
        for an upload's RBD handle, without a keyring).
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
        upstream_driver: str = FILE_DRIVER,
        environ: dict[str, str] | None = None,
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
        self.upstream_driver = upstream_driver
        #: extra environment of the services (e.g. CEPH_ARGS)
        self.environ = dict(environ or {})
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
        drivers = {"upstream": self.upstream_driver, "ours": self.ours_driver}
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
            [str(Path(__file__).resolve().parents[2]), str(self.base / "site")]
        )
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # cinder-volume runs privsep-helper and cinder-rootwrap by name
        env["PATH"] = f"{self.venv() / 'bin'}{os.pathsep}{env['PATH']}"
        env.update(self.environ)
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
