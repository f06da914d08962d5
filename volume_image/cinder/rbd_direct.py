"""The same-cluster fast path inside cinder-volume: an RBD volume becomes
an image in an rbd store of its own Ceph cluster without a byte of it
crossing HTTP, Glance's API or (with the mgr flatten) the volume host.

The steps, as Nova's ``direct_snapshot`` takes them for instance
snapshots, with the cleanup it lacks::

    snapshot the volume (volume_image-<image id>), protect it
    clone it into the store's pool as <image id>        (copy-on-write)
    flatten the clone: ceph-mgr's ``rbd task add flatten`` (the data goes
        OSD -> mgr -> OSD, only allocated objects) or librbd here
    unprotect and remove the volume's snapshot          (volume free again)
    snapshot the image ``snap``, protect it              (glance_store's shape)
    POST /v2/images/{id}/locations rbd://fsid/pool/id/snap (service token)
    poll until active (Glance then computes checksum and os_hash_value
        itself, reading the image in Ceph: do_secure_hash)

Whether it applies is :func:`volume_image.core.direct.decide`'s business;
the reason is logged when it does not and the upload streams as before.
A failure after the first step removes what was made in Ceph, in the
order that cannot fail on a child (image, then the volume's snapshot).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import direct
from volume_image.pipeline import offload, retry

__all__ = ["DirectResult", "Fallback", "recover", "upload"]

LOG = logging.getLogger(__name__)

SNAP = "snap"

_POLL_FIRST = 0.2
_POLL_MAX = 2.0
_MGR_TIMEOUT = 30


class Fallback(Exception):
    """The fast path does not apply (or Glance refused the location): the
    caller streams.  Nothing is left in Ceph.
    """


class DirectResult(dict[str, Any]):
    """The image's record once active, plus how the data moved."""


def _cinder_rbd() -> Any:
    """Cinder's RBD driver module (its connection helpers), imported
    only when the fast path runs: it needs the rados bindings.
    """
    from cinder.volume.drivers import rbd as cinder_rbd

    return cinder_rbd


@dataclasses.dataclass
class _Work:
    """What one fast-path upload made in Ceph, so far, and its journal:
    a file under the service's state directory that outlives a killed
    cinder-volume, so that :func:`recover` can undo it at the next start.
    """

    driver: Any
    volume: str
    pool: str
    dst_pool: str
    image: str
    journal: Path | None
    made_snap: bool = False
    made_image: bool = False

    @property
    def snap(self) -> str:
        # never "<name>.clone_snap": Cinder's delete would then keep the
        # volume as <name>.deleted, thinking it has clones
        return f"volume_image-{self.image}"

    def note(self, phase: str) -> None:
        """Record the phase: ``ceph`` (Ceph objects may exist) or
        ``glance`` (Glance may own the image).
        """
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "phase": phase,
            "volume": self.volume,
            "pool": self.pool,
            "dst_pool": self.dst_pool,
            "image": self.image,
        }
        partial = self.journal.with_suffix(".partial")
        partial.write_text(json.dumps(doc))
        os.replace(partial, self.journal)

    def done(self) -> None:
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)

    def undo(self) -> None:
        """Remove what was made: the image first (a clone keeps the
        volume's snapshot busy), then the volume's snapshot.  Each step
        is tried even when another failed, and logged.
        """
        if self.made_image:
            try:
                _remove_image(self.driver, self.dst_pool, self.image)
                self.made_image = False
            except Exception as exc:  # logged: the cause matters more
                LOG.error(
                    "volume_image: could not remove RBD image %s/%s after "
                    "a failed upload: %s; remove it by hand",
                    self.dst_pool,
                    self.image,
                    exc,
                )
        if self.made_snap:
            try:
                _drop_snapshot(self.driver, self.volume, self.pool, self.snap)
                self.made_snap = False
            except self.driver.rbd.ImageNotFound:
                self.made_snap = False
            except Exception as exc:
                LOG.error(
                    "volume_image: could not remove snapshot %s@%s after a "
                    "failed upload: %s; remove it by hand",
                    self.volume,
                    self.snap,
                    exc,
                )
        if not (self.made_image or self.made_snap):
            self.done()


def upload(
    driver: Any,
    volume: Any,
    image_id: str,
    decision: direct.Decision,
    client: glance.GlanceClient,
    settings: config.Settings,
    *,
    journal_dir: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DirectResult:
    """Make image ``image_id`` (``queued``) from ``volume`` inside Ceph.

    :param journal_dir: where the journal of unfinished uploads lives
        (see :func:`recover`); None keeps none.
    :raises Fallback: Ceph refused the write (caps) or Glance refused the
        location (no service role, an older Glance); nothing is left.
    :raises UploadError: anything else, after removing what was made.
    """
    work = _Work(
        driver,
        volume.name,
        driver.configuration.rbd_pool,
        decision.pool,
        image_id,
        journal_dir / f"{image_id}.json" if journal_dir else None,
    )
    deadline_at = clock() + settings.rbd_direct_timeout
    try:
        t0 = clock()
        how = _make(work, decision, settings, deadline_at, clock, sleep)
        t1 = clock()
        _register(work, decision, client)
        image = _wait_active(client, image_id, deadline_at, clock, sleep)
        t2 = clock()
    except driver.rbd.PermissionError as exc:
        work.undo()
        raise Fallback(
            f"Ceph refused a write into pool {decision.pool}: the volume "
            "service's Ceph user needs the osd cap 'profile rbd pool="
            f"{decision.pool}' (and the mgr cap of the same name for the "
            f"mgr flatten) ({exc})"
        ) from exc
    except (driver.rbd.Error, driver.rados.Error) as exc:
        work.undo()
        raise errors.UploadError(
            f"the upload of volume {volume.id} into store {decision.store} "
            f"(Ceph cluster {decision.fsid}, pool {decision.pool}) failed "
            f"in Ceph: {exc}; nothing was left in the cluster"
        ) from exc
    except BaseException:
        work.undo()
        raise
    work.done()
    result = DirectResult(image)
    result["volume_image_flatten"] = how
    # where the time went: Ceph's work, Glance's activation.  Glance's
    # hash (do_secure_hash) comes later, from its own read of the image:
    # nothing here could check it (no byte of the volume was read), and
    # the volume is free already, so the upload does not wait for it
    result["volume_image_seconds"] = (t1 - t0, t2 - t1)
    return result


def _make(
    work: _Work,
    decision: direct.Decision,
    settings: config.Settings,
    deadline_at: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str:
    """Snapshot, clone, flatten, free the volume, snapshot the image;
    returns who flattened.
    """
    work.note("ceph")
    _snapshot(work.driver, work.volume, work.pool, work.snap)
    work.made_snap = True
    _clone(
        work.driver,
        work.volume,
        work.pool,
        work.snap,
        work.dst_pool,
        work.image,
    )
    work.made_image = True
    how = _flatten(
        work.driver,
        work.dst_pool,
        work.image,
        settings,
        deadline_at,
        clock,
        sleep,
    )
    _drop_snapshot(work.driver, work.volume, work.pool, work.snap)
    work.made_snap = False
    _image_snapshot(work.driver, work.dst_pool, work.image)
    return how


def _register(
    work: _Work, decision: direct.Decision, client: glance.GlanceClient
) -> None:
    """Give the image's location to Glance.

    :raises Fallback: Glance refused it (the image is still ``queued``).
    """
    url = direct.location_url(decision.fsid, work.dst_pool, work.image)
    answer = client.add_location(work.image, url)
    if answer.status == 202:
        # from here on Glance may own the RBD image: a restart must not
        # remove it (see recover)
        work.note("glance")
        return
    hint = {
        403: "; the service user needs the service role",
        404: "; this Glance has no location API (2.17)",
        405: "; this Glance has no location API (2.17)",
    }.get(answer.status, "")
    raise Fallback(
        f"Glance refused the location ({answer.status}: "
        f"{answer.message or 'no reason given'}{hint})"
    )


def recover(driver: Any, journal_dir: Path) -> int:
    """Undo what fast-path uploads killed with their cinder-volume left in
    Ceph (called when the backend starts); returns how many were undone.

    An upload killed after Glance took its location is left to Glance
    (its image is active, or queued for Cinder's and our sweep), with a
    warning naming the RBD image.
    """
    undone = 0
    for path in sorted(journal_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            work = _Work(
                driver,
                doc["volume"],
                doc["pool"],
                doc["dst_pool"],
                doc["image"],
                path,
                made_snap=True,
                made_image=True,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.warning("volume_image: unreadable journal %s: %s", path, exc)
            continue
        if doc.get("phase") == "glance":
            LOG.warning(
                "volume_image: the upload of %s into image %s was cut "
                "after Glance took its location; RBD image %s/%s is "
                "Glance's now (delete the image in Glance if it is not "
                "active)",
                work.volume,
                work.image,
                work.dst_pool,
                work.image,
            )
            work.done()
            continue
        work.undo()
        undone += 1
        LOG.info(
            "volume_image: removed what a killed upload of %s into image "
            "%s left in Ceph",
            work.volume,
            work.image,
        )
    return undone


def _snapshot(driver: Any, name: str, pool: str, snap: str) -> None:
    cinder_rbd = _cinder_rbd()
    with cinder_rbd.RBDVolumeProxy(driver, name, pool=pool) as vol:
        vol.create_snap(snap)
        vol.protect_snap(snap)


def _clone(
    driver: Any, name: str, pool: str, snap: str, dst_pool: str, dst: str
) -> None:
    cinder_rbd = _cinder_rbd()
    with cinder_rbd.RADOSClient(driver, pool) as src:
        with cinder_rbd.RADOSClient(driver, dst_pool) as dest:
            driver.RBDProxy().clone(
                src.ioctx,
                name,
                snap,
                dest.ioctx,
                dst,
                features=dest.features,
            )


def _flatten(
    driver: Any,
    pool: str,
    image: str,
    settings: config.Settings,
    deadline_at: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str:
    """Flatten the clone; returns who did it ("mgr" or "local")."""
    if settings.rbd_direct_flatten == "mgr":
        try:
            _flatten_on_mgr(driver, pool, image, deadline_at, clock, sleep)
            return "mgr"
        except _NoMgr as exc:
            LOG.info(
                "volume_image: ceph-mgr cannot flatten %s/%s (%s); "
                "flattening in cinder-volume",
                pool,
                image,
                exc,
            )
    driver._do_flatten(image, pool)  # Cinder's, under its flatten limit
    return "local"


class _NoMgr(Exception):
    """ceph-mgr refused the flatten task (no mgr, no caps, no module)."""


def _mgr(cluster: Any, **cmd: Any) -> Any:
    text = json.dumps({**cmd, "format": "json"})
    # bounded: a mgr that does not answer is one that cannot flatten
    ret, out, err = offload.run(
        lambda: cluster.mgr_command(text, b"", timeout=_MGR_TIMEOUT)
    )
    if ret != 0:
        raise _NoMgr(f"{cmd['prefix']}: {err or ret}")
    return json.loads(out) if out else None


def _flatten_on_mgr(
    driver: Any,
    pool: str,
    image: str,
    deadline_at: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    cinder_rbd = _cinder_rbd()
    with cinder_rbd.RADOSClient(driver, pool) as client:
        task = _mgr(
            client.cluster,
            prefix="rbd task add flatten",
            image_spec=f"{pool}/{image}",
        )
        task_id = task.get("id") if isinstance(task, dict) else None

        def mine() -> dict[str, Any] | None:
            for entry in _mgr(client.cluster, prefix="rbd task list") or []:
                if isinstance(entry, dict) and entry.get("id") == task_id:
                    return entry
            return None

        def ended(entry: dict[str, Any] | None) -> bool:
            return entry is None or bool(
                entry.get("failed") or entry.get("retry_message")
            )

        left = retry.poll(
            mine,
            ended,
            until=deadline_at,
            every=_POLL_FIRST,
            grow=2.0,
            most=_POLL_MAX,
            idle=sleep,
            clock=clock,
        )
        if left is not None and ended(left):
            raise errors.UploadError(
                f"ceph-mgr's flatten of {pool}/{image} failed: "
                f"{left.get('retry_message') or left}"
            )
        if left is not None:
            _mgr(client.cluster, prefix="rbd task cancel", task_id=task_id)
            raise errors.UploadError(
                f"the flatten of {pool}/{image} did not end within "
                "[volume_image] rbd_direct_timeout"
            )
    # the task is gone: done, or dropped; the parent tells which
    with cinder_rbd.RBDVolumeProxy(driver, image, pool=pool) as img:
        try:
            parent = img.parent_info()
        except driver.rbd.ImageNotFound:
            return
    raise errors.UploadError(
        f"ceph-mgr's flatten task of {pool}/{image} ended, but the image "
        f"still has parent {parent}"
    )


def _drop_snapshot(driver: Any, name: str, pool: str, snap: str) -> None:
    cinder_rbd = _cinder_rbd()
    with cinder_rbd.RBDVolumeProxy(driver, name, pool=pool) as vol:
        try:
            vol.unprotect_snap(snap)
        except driver.rbd.InvalidArgument:
            pass  # not protected any more
        vol.remove_snap(snap)


def _image_snapshot(driver: Any, pool: str, image: str) -> None:
    cinder_rbd = _cinder_rbd()
    with cinder_rbd.RBDVolumeProxy(driver, image, pool=pool) as img:
        img.create_snap(SNAP)
        img.protect_snap(SNAP)


def _remove_image(driver: Any, pool: str, image: str) -> None:
    cinder_rbd = _cinder_rbd()
    try:
        with cinder_rbd.RBDVolumeProxy(driver, image, pool=pool) as img:
            for snap in list(img.list_snaps()):
                try:
                    img.unprotect_snap(snap["name"])
                except driver.rbd.InvalidArgument:
                    pass
                img.remove_snap(snap["name"])
    except driver.rbd.ImageNotFound:
        return
    with cinder_rbd.RADOSClient(driver, pool) as client:
        try:
            driver.RBDProxy().remove(client.ioctx, image)
        except driver.rbd.ImageNotFound:
            pass


def _wait_active(
    client: glance.GlanceClient,
    image_id: str,
    deadline_at: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Poll the image until Glance's location task made it ``active``.

    A task that failed sends the image back to ``queued`` without the
    lock property: the reason is in the image's tasks.
    """
    seen_lock = False

    def read() -> dict[str, Any]:
        nonlocal seen_lock
        image = client.get_image(image_id)
        seen_lock = seen_lock or bool(image.get("os_glance_import_task"))
        return image

    def reverted(image: dict[str, Any]) -> bool:
        # back to queued once the task held the lock: the task failed
        return (
            image.get("status") == "queued"
            and not image.get("os_glance_import_task")
            and seen_lock
        )

    def ended(image: dict[str, Any]) -> bool:
        status = image.get("status")
        return status not in ("queued", "importing", "saving") or reverted(
            image
        )

    image = retry.poll(
        read,
        ended,
        until=deadline_at,
        every=_POLL_FIRST,
        grow=2.0,
        most=_POLL_MAX,
        idle=sleep,
        clock=clock,
    )
    status = image.get("status")
    if status == "active":
        return image
    if reverted(image):
        raise errors.UploadError(
            f"Glance did not accept the location of image {image_id}: "
            + _task_message(client, image_id)
        )
    if ended(image):
        raise errors.UploadError(
            f"image {image_id} went {status} while Glance added its location"
        )
    raise errors.UploadError(
        f"image {image_id} was not active within [volume_image] "
        "rbd_direct_timeout after its location was added"
        + ("" if seen_lock else "; Glance never started its location task")
    )


def _task_message(client: glance.GlanceClient, image_id: str) -> str:
    try:
        tasks = client.image_tasks(image_id)
    except errors.GlanceError:
        return "its task could not be read"
    for task in reversed(tasks):
        if task.get("type") == "location_import" and task.get("message"):
            return str(task["message"])
    return "no reason given"
