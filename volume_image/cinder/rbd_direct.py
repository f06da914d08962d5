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
    poll: active, then Glance's own checksum and os_hash_value

Whether it applies is :func:`volume_image.core.direct.decide`'s business;
the reason is logged when it does not and the upload streams as before.
A failure after the first step removes what was made in Ceph, in the
order that cannot fail on a child (image, then the volume's snapshot).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import direct, stores
from volume_image.pipeline import offload

__all__ = ["DirectResult", "Fallback", "upload"]

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


def _tmp_snap(image_id: str) -> str:
    # never "<name>.clone_snap": Cinder's delete would then keep the
    # volume as <name>.deleted, thinking it has clones
    return f"volume_image-{image_id}"


def upload(
    driver: Any,
    volume: Any,
    image_id: str,
    catalog: stores.StoreCatalog,
    decision: direct.Decision,
    client: glance.GlanceClient,
    settings: config.Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DirectResult:
    """Make image ``image_id`` (``queued``) from ``volume`` inside Ceph.

    :raises Fallback: Ceph refused the write (caps) or Glance refused the
        location (no service role, an older Glance); nothing is left.
    :raises UploadError: anything else, after removing what was made.
    """
    rbd = driver.rbd
    src_pool = driver.configuration.rbd_pool
    tmp = _tmp_snap(image_id)
    made_image = False
    made_snap = False
    deadline_at = clock() + settings.rbd_direct_timeout
    where = (
        f"store {decision.store} (Ceph cluster {decision.fsid}, pool "
        f"{decision.pool})"
    )
    try:
        _snapshot(driver, volume.name, src_pool, tmp)
        made_snap = True
        _clone(driver, volume.name, src_pool, tmp, decision.pool, image_id)
        made_image = True
        how = _flatten(
            driver,
            decision.pool,
            image_id,
            settings,
            deadline_at,
            clock,
            sleep,
        )
        _drop_snapshot(driver, volume.name, src_pool, tmp)
        made_snap = False
        _image_snapshot(driver, decision.pool, image_id)
        url = direct.location_url(decision.fsid, decision.pool, image_id)
        answer = client.add_location(image_id, url)
        if answer.status != 202:
            raise Fallback(
                f"Glance refused the location ({answer.status}: "
                f"{answer.message or 'no reason given'}"
                + (
                    "; the service user needs the service role"
                    if answer.status == 403
                    else ""
                )
                + (
                    "; this Glance has no location API (2.17)"
                    if answer.status in (404, 405)
                    else ""
                )
                + ")"
            )
        image = _wait_active(client, image_id, deadline_at, clock, sleep)
        made_image = False  # Glance owns it now: its delete removes it
    except Fallback:
        _undo(
            driver,
            volume.name,
            src_pool,
            tmp,
            decision.pool,
            image_id,
            made_snap,
            made_image,
        )
        raise
    except rbd.PermissionError as exc:
        _undo(
            driver,
            volume.name,
            src_pool,
            tmp,
            decision.pool,
            image_id,
            made_snap,
            made_image,
        )
        raise Fallback(
            f"Ceph refused a write for {where}: the volume's Ceph user "
            "needs 'profile rbd pool=" + decision.pool + "' (osd) and, for "
            "the mgr flatten, 'profile rbd pool=" + decision.pool + "' "
            f"(mgr) ({exc})"
        ) from exc
    except (rbd.Error, driver.rados.Error) as exc:
        _undo(
            driver,
            volume.name,
            src_pool,
            tmp,
            decision.pool,
            image_id,
            made_snap,
            made_image,
        )
        raise errors.UploadError(
            f"the upload of volume {volume.id} into {where} failed in "
            f"Ceph: {exc}; nothing was left in the cluster"
        ) from exc
    except BaseException:
        _undo(
            driver,
            volume.name,
            src_pool,
            tmp,
            decision.pool,
            image_id,
            made_snap,
            made_image,
        )
        raise
    result = DirectResult(image)
    result["volume_image_flatten"] = how
    result["volume_image_hashed"] = _wait_hashed(
        client, image_id, deadline_at, clock, sleep
    )
    return result


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
        delay = _POLL_FIRST
        while True:
            tasks = _mgr(client.cluster, prefix="rbd task list")
            mine = [
                t
                for t in tasks or []
                if isinstance(t, dict) and t.get("id") == task_id
            ]
            if not mine:
                break
            if mine[0].get("failed") or mine[0].get("retry_message"):
                raise errors.UploadError(
                    f"ceph-mgr's flatten of {pool}/{image} failed: "
                    f"{mine[0].get('retry_message') or mine[0]}"
                )
            if clock() + delay > deadline_at:
                _mgr(client.cluster, prefix="rbd task cancel", task_id=task_id)
                raise errors.UploadError(
                    f"the flatten of {pool}/{image} did not end within "
                    "[volume_image] rbd_direct_timeout"
                )
            sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
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


def _undo(
    driver: Any,
    name: str,
    pool: str,
    tmp: str,
    dst_pool: str,
    image: str,
    made_snap: bool,
    made_image: bool,
) -> None:
    """Remove what this upload made in Ceph: the image first (a child
    keeps the volume's snapshot busy), then the volume's snapshot.
    Each step is tried even when another failed, and logged.
    """
    if made_image:
        try:
            _remove_image(driver, dst_pool, image)
        except Exception as exc:  # logged: the original error matters more
            LOG.error(
                "volume_image: could not remove RBD image %s/%s after a "
                "failed upload: %s; remove it by hand",
                dst_pool,
                image,
                exc,
            )
    if made_snap:
        try:
            _drop_snapshot(driver, name, pool, tmp)
        except driver.rbd.ImageNotFound:
            pass
        except Exception as exc:
            LOG.error(
                "volume_image: could not remove snapshot %s@%s after a "
                "failed upload: %s; remove it by hand",
                name,
                tmp,
                exc,
            )


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
    delay = _POLL_FIRST
    seen_lock = False
    while True:
        image = client.get_image(image_id)
        status = image.get("status")
        if status == "active":
            return image
        locked = bool(image.get("os_glance_import_task"))
        seen_lock = seen_lock or locked
        if status == "queued" and not locked and seen_lock:
            raise errors.UploadError(
                f"Glance did not accept the location of image {image_id}: "
                + _task_message(client, image_id)
            )
        if status not in ("queued", "importing", "saving"):
            raise errors.UploadError(
                f"image {image_id} went {status} while Glance added its "
                "location"
            )
        if clock() + delay > deadline_at:
            raise errors.UploadError(
                f"image {image_id} was not active within [volume_image] "
                "rbd_direct_timeout after its location was added"
                + (
                    ""
                    if seen_lock
                    else "; Glance never started its location task"
                )
            )
        sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


def _wait_hashed(
    client: glance.GlanceClient,
    image_id: str,
    deadline_at: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """Wait for Glance's own hash (``do_secure_hash``): it reads the
    image in Ceph after making it active.  False when it did not come in
    time (the image is kept; Glance may still fill it in).
    """
    delay = _POLL_FIRST
    while True:
        image = client.get_image(image_id)
        if image.get("os_hash_value") and image.get("checksum"):
            return True
        if clock() + delay > deadline_at:
            return False
        sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


def _task_message(client: glance.GlanceClient, image_id: str) -> str:
    try:
        tasks = client.image_tasks(image_id)
    except errors.GlanceError:
        return "its task could not be read"
    for task in reversed(tasks):
        if task.get("type") == "location_import" and task.get("message"):
            return str(task["message"])
    return "no reason given"
