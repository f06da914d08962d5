"""``make demo``: Cinder's "upload a volume to an image" with
volume_image in it, as an admin and a user meet it, on real servers.

It starts Keystone 30, RabbitMQ, Glance 33 (keystone flavor; stores
``fast`` (default), ``cheap`` and ``web`` (read-only)) and Cinder 29
(api, scheduler, volume) under Keystone, with our ``store_validation``
filter in cinder-api's pipeline and backend ``ours`` =
``volume_image.cinder.driver.StoreAwareDriver`` wrapping the harness's
file driver.  Then, with the real ``openstack`` and ``cinder`` commands:

1. the admin makes a volume type for backend ``ours`` and sets
   ``image_service:store_id``: ``chep`` is refused by the filter with
   its suggestion, ``cheap`` is accepted;
2. the user ``demo`` (a member) creates a volume of that type, known
   bytes are written into it (the file driver keeps each volume as a
   file), and ``cinder upload-to-image`` uploads it;
3. the image is active in store ``cheap``, and Glance's checksum is the
   volume's md5.

A short part with the ``volume-image`` host tool follows (``stores``,
``validate``).  Every command is printed as a user types it, with its
output; the exit code is non-zero if any step did not behave as shown.
Every server is stopped by PID at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
from keystoneauth1 import exceptions as ks_exc

from harness import launcher

KEY = "image_service:store_id"
MIB = 1 << 20
#: what the demo writes at the start of the 1 GiB volume
DATA_MIB = 8
TYPE = "gold"
VOLUME = "vol-1"
IMAGE = "vol-1-image"
SOURCE_ROOT = Path(__file__).resolve().parents[1]


class DemoFailed(Exception):
    """A step did not behave as the demo shows it."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say(f"\n== {text}")


class Demo:
    """The servers of the demo, under ``base``, and the commands run
    against them.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.keystone = launcher.KeystoneServer(base / "keystone")
        self.rabbit = launcher.RabbitServer(base / "rabbit")
        self.glance = launcher.GlanceServer(
            base / "glance", processes=1, keystone=self.keystone
        )
        self.stack = launcher.CinderStack(
            base / "cinder",
            self.glance.url,
            self.rabbit.transport_url,
            keystone=self.keystone,
            # our filter checks every write of image_service: specs,
            # asking Glance with the caller's token
            with_filter=True,
            filter_options={
                "glance_endpoint": self.glance.url,
                "forward_token": "true",
            },
            ours_driver="volume_image.cinder.driver.StoreAwareDriver",
            ours_wrapped_driver=launcher.FILE_DRIVER,
        )
        self.started: list[launcher.Server] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.user = "admin"

    # --- servers --------------------------------------------------------
    def start(self) -> None:
        """Keystone, RabbitMQ and Glance at once (Glance's authtoken
        needs Keystone only at its first request), then Cinder, which
        needs all three.
        """
        t0 = time.monotonic()
        first = (self.keystone, self.rabbit, self.glance)
        # stop() stops these whether or not they got as far as starting
        self.started.extend(first)
        self._pool = concurrent.futures.ThreadPoolExecutor(len(first))
        futures = [self._pool.submit(s.start) for s in first]
        errors = [f.exception() for f in futures if f.exception()]
        self._pool.shutdown()
        if errors:
            raise DemoFailed(f"a server did not start: {errors[0]}")
        self.keystone.register_service("image", "glance", self.glance.url)
        self.started.append(self.stack)
        self.stack.start()
        self.keystone.register_service(
            "block-storage", "cinderv3", f"{self.stack.url}/v3/%(project_id)s"
        )
        for server in self.started:
            _say(
                f"  {server.name:<13} {server.url:<28} pid {server.pid:<7} "
                f"up in {server.startup_seconds:4.1f}s"
            )
        _say(f"  all up in {time.monotonic() - t0:.1f}s")

    def stop(self) -> None:
        """Stop every server by PID: Cinder, Glance and Keystone at
        once, then RabbitMQ.  A start still under way (Ctrl-C during the
        start) is waited for first, so nothing starts after this; Ctrl-C
        is ignored meanwhile.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            last = [s for s in self.started if s is self.rabbit]
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for future in [
                    pool.submit(s.stop) for s in self.started if s not in last
                ]:
                    future.result()
            for server in last:
                server.stop()
            self.started.clear()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    # --- commands -------------------------------------------------------
    def credentials(self, user: str) -> dict[str, str]:
        """The ``OS_*`` variables of ``user`` (its ``openrc``)."""
        return {
            **self.keystone.credentials(user),
            "OS_IDENTITY_API_VERSION": "3",
            "OS_INTERFACE": "public",
            "OS_VOLUME_API_VERSION": "3",
        }

    def source(self, user: str) -> None:
        """``. <user>-openrc``: the following commands run as ``user``."""
        (self.home / f"{user}-openrc").write_text(
            "".join(
                f"export {k}={shlex.quote(v)}\n"
                for k, v in self.credentials(user).items()
            )
        )
        self.user = user
        _, project, roles = self.keystone.USERS[user]
        _say(
            f"\n$ . {user}-openrc    # {user}, project {project}, role "
            f"{', '.join(roles)}; OS_AUTH_URL={self.keystone.auth_url}"
        )

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OS_", "CINDER_", "XDG_"))
        }
        env.pop("PYTHONWARNINGS", None)
        clients = launcher.ensure_venv("clients") / "bin"
        env.update(
            # no clouds.yaml of the caller's
            HOME=str(self.home),
            PATH=os.pathsep.join([str(clients), env.get("PATH", "")]),
            # volume-image from the source the servers run
            PYTHONPATH=os.pathsep.join(
                [str(SOURCE_ROOT), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
        )
        env.update(self.credentials(self.user))
        return env

    def run(
        self,
        *args: str,
        code: int = 0,
        shows: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Print ``args`` as typed, run it, print its output; raise
        :class:`DemoFailed` unless it exits with ``code`` and its output
        contains each of ``shows``.
        """
        _say(f"$ {shlex.join(args)}")
        argv = list(args)
        if argv[0] == "volume-image":
            argv[:1] = [sys.executable, "-m", "volume_image.cli.main"]
        proc = subprocess.run(
            argv,
            env=self.environment(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        out = proc.stdout + proc.stderr
        sys.stdout.write(out if out.endswith("\n") or not out else out + "\n")
        if proc.returncode != code:
            _say(f"(exit code {proc.returncode})")
            raise DemoFailed(
                f"{shlex.join(args)}: exit {proc.returncode}, expected {code}"
            )
        if code:
            _say(f"(exit code {code})")
        missing = [text for text in shows if text not in out]
        if missing:
            raise DemoFailed(
                f"{shlex.join(args)}: no {missing[0]!r} in output"
            )
        return proc

    def session_get(self, user: str, service: str, path: str) -> Any:
        """GET ``path`` of a service from the catalog, as ``user``."""
        resp = self.keystone.session(user).get(
            path,
            endpoint_filter={"service_type": service, "interface": "public"},
            raise_exc=True,
        )
        return resp.json()

    def wait(
        self, what: str, check: Callable[[], bool], timeout: float = 120.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise DemoFailed(f"{what}: not within {timeout:.0f}s")
            time.sleep(0.3)

    # --- the steps ------------------------------------------------------
    def admin_sets_the_store(self) -> None:
        _heading(
            "An admin makes a volume type for backend 'ours' and names "
            "the Glance store its images go to"
        )
        self.source("admin")
        self.run(
            *("openstack", "volume", "type", "create"),
            *("--property", "volume_backend_name=ours"),
            *("-c", "name", "-c", "properties", TYPE),
            shows=["volume_backend_name='ours'"],
        )
        _say("\n# a typo: the filter in cinder-api asks Glance and refuses it")
        self.run(
            *("openstack", "volume", "type", "set"),
            *("--property", f"{KEY}=chep", TYPE),
            code=1,
            shows=["Glance has no store 'chep'", "Did you mean 'cheap'?"],
        )
        self.run(
            *("openstack", "volume", "type", "set"),
            *("--property", f"{KEY}=cheap", TYPE),
        )
        self.run(
            *("openstack", "volume", "type", "show"),
            *("-c", "name", "-c", "properties", TYPE),
            shows=[f"{KEY}='cheap'"],
        )

    def user_uploads(self) -> tuple[str, str]:
        """Return the image's id and the volume's md5."""
        _heading(
            f"A user creates a volume of type '{TYPE}' and uploads it "
            "to an image"
        )
        self.source("demo")
        made = self.run(
            *("openstack", "volume", "create", "--type", TYPE),
            *("--size", "1", "-f", "value", "-c", "id", VOLUME),
        )
        volume_id = made.stdout.strip()
        self.wait(
            f"volume {volume_id} available",
            lambda: self.volume(volume_id)["status"] == "available",
        )
        self.run(
            *("openstack", "volume", "show", VOLUME),
            *("-c", "name", "-c", "size", "-c", "status", "-c", "type"),
            shows=["available", TYPE],
        )
        md5 = self.write_volume(volume_id)
        done = self.run(
            *("cinder", "upload-to-image", "--disk-format", "raw"),
            *(VOLUME, IMAGE),
            shows=["uploading"],
        )
        image_id = _table_value(done.stdout, "image_id")
        _say(f"\n# waiting until {VOLUME} is available again (uploaded)")
        self.wait(
            f"volume {volume_id} leaves 'uploading'",
            lambda: self.volume(volume_id)["status"] != "uploading",
        )
        if self.volume(volume_id)["status"] != "available":
            raise DemoFailed(f"{VOLUME} is {self.volume(volume_id)['status']}")
        return image_id, md5

    def volume(self, volume_id: str) -> dict[str, Any]:
        return dict(
            self.session_get("demo", "block-storage", f"/volumes/{volume_id}")[
                "volume"
            ]
        )

    def write_volume(self, volume_id: str) -> str:
        """Write :data:`DATA_MIB` MiB of known bytes into the volume's
        file, and make that all of it; return its md5.
        """
        path = self.stack.volume_file(volume_id)
        _say(
            f"\n# on the volume host: the test driver keeps {VOLUME} as the "
            f"file {path.name};\n# {DATA_MIB} MiB of known bytes go in, and "
            f"the file is cut to {DATA_MIB} MiB (1 GiB\n# would take 10 s "
            "more to upload here; Cinder's smallest volume is 1 GiB)"
        )
        md5 = hashlib.md5()  # noqa: S324 - Glance's checksum is an md5
        with open(path, "r+b") as f:
            f.truncate(DATA_MIB * MIB)
            for i in range(DATA_MIB):
                block = bytes([i + 1]) * MIB
                f.write(block)
                md5.update(block)
        _say(f"# md5 of the volume: {md5.hexdigest()}\n")
        return md5.hexdigest()

    def image_landed(self, image_id: str, md5: str) -> None:
        _heading("Where the image landed")
        self.run(
            *("openstack", "image", "show", IMAGE),
            *("-c", "id", "-c", "status", "-c", "size"),
            *("-c", "disk_format", "-c", "checksum", "-c", "properties"),
            *("--max-width", "79"),
            shows=[image_id, "active", "stores='cheap'", md5],
        )
        image = self.session_get("demo", "image", f"/v2/images/{image_id}")
        on_disk = [
            store
            for store in ("fast", "cheap")
            if (self.glance.store_dir(store) / image_id).exists()
        ]
        checks = {
            "status active": image["status"] == "active",
            "in store cheap only": image["stores"] == "cheap",
            "its file in cheap's directory only": on_disk == ["cheap"],
            "Glance's checksum = the volume's md5": image["checksum"] == md5,
            "size = the volume's": image["size"] == DATA_MIB * MIB,
        }
        for what, ok in checks.items():
            _say(f"  {'ok' if ok else 'NOT'}: {what}")
        failed = [what for what, ok in checks.items() if not ok]
        if failed:
            raise DemoFailed(f"the image: not {', '.join(failed)}")
        _say("  verified: the volume's bytes are in store 'cheap'")

    def host_tool(self) -> None:
        _heading(
            "The host tool on the same Glance (found in the catalog, with "
            "demo's Keystone token)"
        )
        self.run("volume-image", "stores", shows=["cheap"])
        self.run(
            *("volume-image", "validate", f"{KEY}=web"),
            "volume_backend_name=ours",
            code=3,
            shows=["read-only"],
        )


def _table_value(text: str, field: str) -> str:
    """A field of a ``cinder`` command's table."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == field:
            return cells[1]
    raise DemoFailed(f"no {field} in:\n{text}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cleanup(demo: Demo) -> None:
    """Keep the logs, drop the volume files and the images."""
    for junk in (demo.stack.volumes_dir, demo.glance.store_root):
        shutil.rmtree(junk, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 when every step behaved as shown."""
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    base = Path(tempfile.mkdtemp(prefix="volume-image-demo-"))
    demo = Demo(base)
    _heading(
        "Starting Keystone 30, RabbitMQ, Glance 33 (stores fast=default, "
        "cheap, web=read-only)\n   and Cinder 29 (our filter in cinder-api; "
        "backend 'ours' = StoreAwareDriver)"
    )
    failure = ""
    try:
        demo.start()
        demo.admin_sets_the_store()
        image_id, md5 = demo.user_uploads()
        demo.image_landed(image_id, md5)
        demo.host_tool()
    except DemoFailed as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = "interrupted"
    except (
        RuntimeError,
        OSError,
        requests.RequestException,
        ks_exc.ClientException,
    ) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        demo.stop()
        _cleanup(demo)
    _say(f"\nServers stopped; their logs are under {base}")
    if failure:
        _say(f"\nDEMO FAILED: {failure}")
        return 130 if failure == "interrupted" else 1
    _say(
        "\nDemo finished in "
        f"{time.monotonic() - t0:.0f}s: every step behaved as shown."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
