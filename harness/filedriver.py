"""A file-backed test volume driver for cinder-volume 29 (no LVM, no
device-mapper, no iSCSI): what :class:`~harness.launcher.
CinderStack` runs its backends on.

Each volume is a sparse file ``<file_volume_dir>/volume-<id>`` (see
:func:`volume_file`); tests write a volume's bytes straight into it.
Attaching uses os-brick's ``local`` connector (``device_path`` = the
file), so Cinder's own ``VolumeDriver.copy_volume_to_image`` ->
``volume_utils.upload_volume`` -> ``image_utils.upload_volume`` runs
unchanged, os-brick's privsep ``dd`` device check included.

Test-only: no snapshots, no clones, no real export.  This module is
imported by cinder-volume only (inside the cinder virtualenv, with the
project's source on its ``PYTHONPATH``); the project's own environment
has no cinder.  Backend section options::

    volume_driver = harness.filedriver.FileVolumeDriver
    file_volume_dir = <directory of the volume files>
    # optional: log the event loop's stalls (see HubTicker)
    file_volume_ticker_file = <path>
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import eventlet
from cinder import exception
from cinder.volume import configuration, driver, volume_utils
from oslo_config import cfg
from oslo_utils import units

# a stdlib logger: oslo.log configures these too (and oslo_log is not in
# the project's environment, where mypy reads this module)
LOG = logging.getLogger(__name__)

volume_opts = [
    cfg.StrOpt(
        "file_volume_dir",
        default="$state_path/file-volumes",
        help="Directory that holds the sparse volume files volume-<id>.",
    ),
    cfg.StrOpt(
        "file_volume_ticker_file",
        default=None,
        help="When set, a greenthread appends '<time.time()> <lag_ms>' "
        "to this file for every 10 ms sleep that woke up more than 5 ms "
        "late, and '<time.time()> 0' once a second: the event loop's "
        "stalls, for benchmarks.",
    ),
]

# as Cinder's own drivers do: the shared group holds the defaults, each
# backend section appends them in the driver's __init__
cfg.CONF.register_opts(volume_opts, group=configuration.SHARED_CONF_GROUP)


def volume_file(directory: str | Path, volume_id: str) -> Path:
    """Where the volume ``volume_id`` keeps its bytes.

    :class:`~harness.launcher.CinderStack.volume_file` uses
    the same formula (it cannot import this module: no cinder there).
    """
    return Path(directory) / f"volume-{volume_id}"


class HubTicker:
    """A greenthread that measures how late the event loop wakes it.

    It sleeps :attr:`PERIOD` in a loop; each wake-up later than
    :attr:`THRESHOLD` appends ``<time.time()> <lag_ms>`` to ``path``
    (lag = actual minus requested sleep), and a heartbeat line
    ``<time.time()> 0`` is written once a second, so a reader can tell
    "no stall in this window" from "ticker not running".  The longest
    stall inside a time window is the largest lag whose line falls in it
    (a line is written at the end of its stall).  :meth:`mark` adds
    ``<time.time()> begin|end <volume id>`` lines around the driver's
    ``copy_volume_to_image``.
    """

    PERIOD = 0.010
    THRESHOLD = 0.005
    HEARTBEAT = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread: Any = None

    def start(self) -> None:
        self._marks: list[str] = []
        self._thread = eventlet.spawn(self._run)

    def mark(self, what: str, volume_id: str) -> None:
        """Log ``<time.time()> <what> <volume_id>`` (a benchmark's window
        around the driver's ``copy_volume_to_image``).
        """
        self._marks.append(f"{time.time():.6f} {what} {volume_id}\n")

    def _run(self) -> None:
        # line-buffered: every line reaches the file when it is written
        with open(self.path, "a", buffering=1) as out:
            last_beat = time.monotonic()
            while True:
                before = time.monotonic()
                eventlet.sleep(self.PERIOD)
                now = time.monotonic()
                lag = now - before - self.PERIOD
                if lag > self.THRESHOLD:
                    out.write(f"{time.time():.6f} {lag * 1000:.1f}\n")
                while self._marks:
                    out.write(self._marks.pop(0))
                if now - last_beat >= self.HEARTBEAT:
                    out.write(f"{time.time():.6f} 0\n")
                    last_beat = now


class FileVolumeDriver(driver.VolumeDriver):  # type: ignore[misc]
    """Sparse files as volumes, attached with os-brick's local connector."""

    VERSION = "1.0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(volume_opts)
        self.backend_name = (
            self.configuration.safe_get("volume_backend_name") or "file"
        )
        self.ticker: HubTicker | None = None

    # --- setup ---------------------------------------------------------
    def do_setup(self, context: Any) -> None:
        os.makedirs(self.configuration.file_volume_dir, exist_ok=True)
        path = self.configuration.file_volume_ticker_file
        if path:
            self.ticker = HubTicker(path)
            self.ticker.start()
            LOG.info("hub ticker writes to %s", path)

    def check_for_setup_error(self) -> None:
        if not os.access(self.configuration.file_volume_dir, os.W_OK):
            raise exception.VolumeBackendAPIException(
                data=f"{self.configuration.file_volume_dir} is not writable"
            )

    def local_path(self, volume: Any) -> str:
        return str(
            volume_file(self.configuration.file_volume_dir, volume["id"])
        )

    # --- volumes -------------------------------------------------------
    def create_volume(self, volume: Any) -> None:
        with open(self.local_path(volume), "wb") as f:
            f.truncate(volume["size"] * units.Gi)  # sparse
        LOG.info(
            "file volume %s created (%d GiB)", volume["id"], volume["size"]
        )

    def delete_volume(self, volume: Any) -> None:
        Path(self.local_path(volume)).unlink(missing_ok=True)
        Path(self.local_path(volume) + ".format").unlink(missing_ok=True)

    def extend_volume(self, volume: Any, new_size: int) -> None:
        with open(self.local_path(volume), "r+b") as f:
            f.truncate(new_size * units.Gi)

    # --- upload to image ------------------------------------------------
    def copy_volume_to_image(
        self, context: Any, volume: Any, image_service: Any, image_meta: Any
    ) -> None:
        """As the NFS family does for qcow2 volumes: a volume whose file
        has a sidecar ``<file>.format`` (written by a test) is in that
        format, and is uploaded from its file with ``volume_format`` set;
        any other goes through the base driver's attach path.
        """
        sidecar = Path(self.local_path(volume) + ".format")
        if self.ticker is not None:
            self.ticker.mark("begin", volume["id"])
        try:
            if not sidecar.exists():
                super().copy_volume_to_image(
                    context, volume, image_service, image_meta
                )
                return
            self._upload_from_file(
                context, volume, image_service, image_meta, sidecar
            )
        finally:
            if self.ticker is not None:
                self.ticker.mark("end", volume["id"])

    def _upload_from_file(
        self,
        context: Any,
        volume: Any,
        image_service: Any,
        image_meta: Any,
        sidecar: Path,
    ) -> None:
        volume_utils.upload_volume(
            context,
            image_service,
            image_meta,
            self.local_path(volume),
            volume,
            volume_format=sidecar.read_text().strip(),
        )

    # --- "export" / attach: the os-brick local connector ----------------
    def create_export(self, context: Any, volume: Any, connector: Any) -> None:
        return None

    def ensure_export(self, context: Any, volume: Any) -> None:
        return None

    def remove_export(self, context: Any, volume: Any) -> None:
        return None

    def initialize_connection(
        self, volume: Any, connector: Any
    ) -> dict[str, Any]:
        return {
            "driver_volume_type": "local",
            "data": {"device_path": self.local_path(volume)},
        }

    def terminate_connection(
        self, volume: Any, connector: Any, **kwargs: Any
    ) -> None:
        return None

    # --- stats (the scheduler places volumes by them) -------------------
    def _update_volume_stats(self) -> None:
        st = os.statvfs(self.configuration.file_volume_dir)
        self._stats = {
            "volume_backend_name": self.backend_name,
            "vendor_name": "volume_image tests",
            "driver_version": self.VERSION,
            "storage_protocol": "local",
            "total_capacity_gb": st.f_blocks * st.f_frsize // units.Gi,
            "free_capacity_gb": st.f_bavail * st.f_frsize // units.Gi,
            "reserved_percentage": 0,
            "thin_provisioning_support": True,
            "max_over_subscription_ratio": 20.0,
            "multiattach": False,
        }
