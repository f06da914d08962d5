"""Glance multi-store's own example on real Ceph: two clusters, Glance
with ``fast:rbd, cheap:rbd, shared:file, reliable:file``, and Cinder 29
with ``RBDDriver`` as ``upstream`` and wrapped by ours as ``ours``, under
Keystone with a service token.  Shared by the Ceph tests, the demo and
the Ceph benchmark.

Cluster ``a`` (cephx, with a mgr: Cinder's capacity and the fast path's
flatten) holds the volumes (pools ``volumes`` for upstream, ``volumes2``
for ours) and store ``fast``; cluster ``b`` (no auth) holds ``cheap``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from harness.servers.base import Server, ensure_venv
from harness.servers.ceph import CephCluster, add_ceph_bindings, ensure_ceph
from harness.servers.cinder_stack import CinderStack
from harness.servers.glance import GlanceServer
from harness.servers.keystone import KeystoneServer

__all__ = ["GIB", "MIB", "RBD_DRIVER", "CephSite", "stores_config"]

MIB = 1 << 20
GIB = 1 << 30
RBD_DRIVER = "cinder.volume.drivers.rbd.RBDDriver"
OURS = "volume_image.cinder.driver.StoreAwareDriver"
KEY = "image_service:store_id"

#: Glance's add_image_location rule: upstream's, but refusing images
#: named ``refused-location`` (a test of the fast path's fallback)
LOCATION_RULE = (
    "(role:service or role:admin or (role:member and "
    "project_id:%(project_id)s and project_id:%(owner)s)) and not "
    "'refused-location':%(name)s"
)


def stores_config(a: CephCluster, b: CephCluster) -> str:
    """The multi-store example, as written: two rbd stores on two
    clusters and two file stores; ``fast`` is the default.
    """
    rbd = (
        "rbd_store_pool = images\n"
        "rbd_store_user = glance\n"
        "rbd_store_chunk_size = 8\n"
        "rbd_thin_provisioning = true\n"
        "rados_connect_timeout = 10\n"
    )
    return (
        "[DEFAULT]\n"
        "enabled_backends = fast:rbd, cheap:rbd, shared:file, reliable:file\n"
        "\n[glance_store]\ndefault_backend = fast\n"
        f"\n[fast]\nrbd_store_ceph_conf = {a.conf_path}\n{rbd}"
        "store_description = Fast access to rbd store\n"
        f"\n[cheap]\nrbd_store_ceph_conf = {b.conf_path}\n{rbd}"
        "store_description = Less expensive rbd store\n"
        "\n[shared]\nfilesystem_store_datadir = @BASE@/stores/shared\n"
        "store_description = Shared filesystem store\n"
        "\n[reliable]\nfilesystem_store_datadir = @BASE@/stores/reliable\n"
        "store_description = Reliable filesystem store\n"
        "\n[os_glance_staging_store]\n"
        "filesystem_store_datadir = @BASE@/staging\n"
        "\n[os_glance_tasks_store]\n"
        "filesystem_store_datadir = @BASE@/tasks\n"
    )


class CephSite:
    """Start with :meth:`start`, stop with :meth:`stop` (everything by
    PID, in reverse order).

    :param volume_options: more options for both RBD backends.
    :param ours_options: more ``[volume_image]`` options.
    """

    def __init__(
        self,
        base: Path,
        keystone: KeystoneServer,
        transport_url: str,
        *,
        memstore_bytes: int = 2 * GIB,
        ours_options: dict[str, str] | None = None,
    ) -> None:
        self.base = Path(base)
        self.keystone = keystone
        self.a = CephCluster(
            self.base / "a",
            "site-a",
            cephx=True,
            mgr=True,
            memstore_bytes=memstore_bytes,
        )
        self.b = CephCluster(
            self.base / "b", "site-b", memstore_bytes=memstore_bytes
        )
        self.clusters = {"fast": self.a, "cheap": self.b}
        self.glance = GlanceServer(
            self.base / "glance",
            processes=1,
            keystone=keystone,
            stores_config=stores_config(self.a, self.b),
            policy_rules={"add_image_location": LOCATION_RULE},
        )
        self.stack = CinderStack(
            self.base / "cinder",
            self.glance.url,
            transport_url,
            upstream_driver=RBD_DRIVER,
            ours_driver=OURS,
            ours_wrapped_driver=RBD_DRIVER,
            with_filter=False,
            keystone=keystone,
            # os-brick's own conf for an upload's RBD handle names no
            # keyring: librados takes it from here (cluster a only)
            environ={"CEPH_ARGS": f"--keyring={self.a.keyring_path}"},
            backend_options={
                backend: {
                    "rbd_ceph_conf": str(self.a.conf_path),
                    "rbd_pool": self.volume_pool(backend),
                    # empty: os-brick would otherwise insist on
                    # /etc/ceph/ceph.client.<user>.keyring
                    "rbd_user": "",
                    "rados_connect_timeout": "10",
                    "report_discard_supported": "true",
                }
                for backend in ("upstream", "ours")
            },
            sections={
                "service_user": self.service_user(),
                # co-location: on for volumes with a base image
                "volume_image": {
                    "colocate_with_base_image": "true",
                    **(ours_options or {}),
                },
                # Glance's copy-image is admin-only by default
                "volume_image_copy": self.password_auth("admin"),
            },
        )
        self._started: list[Any] = []

    @staticmethod
    def volume_pool(backend: str) -> str:
        """The pool of cluster ``a`` that holds a backend's volumes."""
        return "volumes" if backend == "upstream" else "volumes2"

    def service_user(self) -> dict[str, str]:
        """Cinder's ``[service_user]``: the service token Glance needs to
        accept an ``rbd://`` location.
        """
        return {
            "send_service_user_token": "true",
            **self.password_auth("cinder"),
        }

    def password_auth(self, user: str) -> dict[str, str]:
        """keystoneauth's password options of a Keystone user."""
        creds = self.keystone.credentials(user)
        return {
            "auth_type": "password",
            "auth_url": creds["OS_AUTH_URL"],
            "username": creds["OS_USERNAME"],
            "password": creds["OS_PASSWORD"],
            "user_domain_id": "default",
            "project_name": creds["OS_PROJECT_NAME"],
            "project_domain_id": "default",
        }

    def start(self) -> CephSite:
        """Both clusters and their pools, then Glance, then Cinder."""
        ensure_ceph()
        for venv in ("glance", "cinder"):
            add_ceph_bindings(ensure_venv(venv))
        try:
            self._up(self.a).pools("images", "volumes", "volumes2")
            self._up(self.b).pools("images")
            self._up(self.glance)
            self._up(self.stack)
        except BaseException:
            self.stop()
            raise
        return self

    def _up(self, server: Any) -> Any:
        server.start()
        self._started.append(server)
        return server

    @property
    def servers(self) -> list[Server]:
        """What is running, in start order."""
        return list(self._started)

    def stop(self) -> None:
        """Stop everything started, newest first."""
        while self._started:
            with contextlib.suppress(Exception):
                self._started.pop().stop()

    # -- for tests and benchmarks

    def admin_headers(self) -> dict[str, str]:
        """Glance headers of the cloud admin."""
        token = self.keystone.session("admin").get_token()
        return {"X-Auth-Token": str(token)}

    def image(self, image_id: str) -> dict[str, Any]:
        """Glance's record of an image."""
        resp = requests.get(
            f"{self.glance.url}/v2/images/{image_id}",
            headers=self.admin_headers(),
            timeout=30,
        )
        resp.raise_for_status()
        return dict(resp.json())

    def wait_hashed(
        self, image_id: str, timeout: float = 300.0
    ) -> dict[str, Any]:
        """The image once Glance has its checksum (an image made by its
        location API is active first, hashed by Glance afterwards).
        """
        deadline = time.monotonic() + timeout
        while True:
            image = self.image(image_id)
            if image.get("checksum") or image["status"] != "active":
                return image
            if time.monotonic() > deadline:
                raise RuntimeError(f"image {image_id}: no checksum in time")
            time.sleep(0.2)

    def image_md5(self, image_id: str, dest: Path | None = None) -> str:
        """The md5 of an image's data, read back from Glance (and kept in
        ``dest``).
        """
        md5 = hashlib.md5()  # noqa: S324 - compared with Glance's checksum
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(dest, "wb")) if dest else None
            resp = stack.enter_context(
                requests.get(
                    f"{self.glance.url}/v2/images/{image_id}/file",
                    headers=self.admin_headers(),
                    stream=True,
                    timeout=300,
                )
            )
            resp.raise_for_status()
            for chunk in resp.iter_content(MIB):
                md5.update(chunk)
                if out:
                    out.write(chunk)
        return md5.hexdigest()

    def fill(
        self, backend: str, volume_id: str, length: int, seed: int = 1
    ) -> str:
        """Write ``length`` bytes of a seeded pattern at the head of a
        volume; return the md5 of the whole volume (the rest reads as
        zeros).
        """
        return str(
            self.a.admin(
                (
                    "fill",
                    {
                        "pool": self.volume_pool(backend),
                        "image": f"volume-{volume_id}",
                        "length": length,
                        "seed": seed,
                    },
                )
            )[0]
        )

    def new_volume(
        self,
        backend: str,
        store: str | None,
        *,
        size_gib: int = 1,
        written: int = 8 * MIB,
        seed: int = 1,
        user: str = "demo",
    ) -> tuple[dict[str, Any], str]:
        """A volume of a type naming ``store`` (or none), its head
        written; returns it and its md5.
        """
        specs = {KEY: store} if store else {}
        vtype = self.stack.rest().backend_type(backend, specs)
        rest = self.stack.rest(user=user)
        volume = rest.create_volume(size_gib, volume_type=vtype["id"])
        rest.wait_volume(volume["id"])
        return volume, self.fill(backend, volume["id"], written, seed)

    def rbd_images(self) -> dict[str, list[str]]:
        """The RBD images of each cluster's ``images`` pool."""
        return {"a": self.a.rbd_ls("images"), "b": self.b.rbd_ls("images")}

    @contextlib.contextmanager
    def running(self) -> Iterator[CephSite]:
        """``with site.running():`` starts and stops it."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
