"""Upload records: this host's proof that an image is ours, and whether
the upload filling it is alive.

When the uploader creates an image it writes ``<image id>.json`` in
``<conversion_dir>/volume_image-records/`` and holds an exclusive
``flock`` on it until the upload ends.  The kernel releases the lock when
the process dies, however it dies, so ``volume-image sweep`` on this host
knows, without trusting any image property or PID:

* a record whose lock is held: a live upload, never touched;
* a record whose lock is free: the image is ours and its upload is gone.

A record is removed when its image ends active or deleted; it stays
(unlocked) when a failed upload could not delete its image, for the sweep.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

from volume_image.core import sweep

__all__ = ["directory", "drop", "forget", "hold", "release", "scan"]

LOG = logging.getLogger(__name__)

#: what an image id must look like to name a file
_ID = re.compile(r"^[0-9a-fA-F-]{1,64}\Z", re.ASCII)
_SUFFIX = ".json"
_HELD: dict[str, tuple[int, Path]] = {}
_LOCK = threading.Lock()


def directory(conversion_dir: str | None) -> Path:
    """Where this host's records live (local, like ``conversion_dir``)."""
    parent = Path(conversion_dir or tempfile.gettempdir())
    return parent / "volume_image-records"


def _trusted(where: Path) -> bool:
    """Whether a record directory can be believed: a real directory of
    this user that nobody else may write to (a shared ``conversion_dir``
    such as /tmp lets anyone create one first, and a record there would
    tell the sweep to delete an image).
    """
    try:
        info = os.lstat(where)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & 0o022
    )


def hold(conversion_dir: str | None, image_id: str) -> None:
    """Record that this process is uploading into ``image_id``, and hold
    the record's lock until :func:`drop` or :func:`release`.

    A record that cannot be written is logged, never fatal: the upload
    goes on, and a sweep on this host will not take its image.
    """
    if not _ID.match(image_id):
        LOG.warning("image id %r cannot name an upload record", image_id)
        return
    where = directory(conversion_dir)
    path = where / (image_id + _SUFFIX)
    try:
        where.mkdir(mode=0o700, exist_ok=True)
        if not _trusted(where):
            raise PermissionError(
                errno.EPERM, "not a private directory of this user", where
            )
        fd = os.open(
            path,
            os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
    except OSError as exc:
        LOG.warning("no upload record for image %s: %s", image_id, exc)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "image_id": image_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started": time.time(),
                }
            ).encode(),
        )
    except OSError as exc:
        os.close(fd)
        LOG.warning("no upload record for image %s: %s", image_id, exc)
        return
    with _LOCK:
        _HELD[image_id] = (fd, path)


def _let_go(image_id: str, *, remove: bool) -> None:
    with _LOCK:
        held = _HELD.pop(image_id, None)
    if held is None:
        return
    fd, path = held
    if remove:
        try:
            path.unlink()
        except OSError:
            pass
    os.close(fd)


def drop(image_id: str) -> None:
    """The image ended active or deleted: remove its record."""
    _let_go(image_id, remove=True)


def release(image_id: str) -> None:
    """The upload ended and its image may be left: keep the record, free
    its lock (the sweep may then take the image).
    """
    _let_go(image_id, remove=False)


def scan(conversion_dir: str | None) -> dict[str, str]:
    """This host's records: image id -> :data:`~volume_image.core.sweep.
    RUNNING` (its lock is held) or :data:`~volume_image.core.sweep.RECORD`.

    Unreadable records and directories are skipped: what cannot be read
    proves nothing.
    """
    found: dict[str, str] = {}
    where = directory(conversion_dir)
    if not _trusted(where):
        if where.exists():
            LOG.warning("%s is not a private directory of this user: its "
                        "records prove nothing", where)  # fmt: skip
        return found
    try:
        entries = list(os.scandir(where))
    except OSError:
        return found
    for entry in entries:
        image_id = entry.name[: -len(_SUFFIX)]
        if not entry.name.endswith(_SUFFIX) or not _ID.match(image_id):
            continue
        try:
            fd = os.open(
                entry.path,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            )
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                continue  # not a record this user wrote
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                found[image_id] = sweep.RUNNING
            continue
        else:
            found[image_id] = sweep.RECORD
        finally:
            os.close(fd)
    return found


def forget(conversion_dir: str | None, image_id: str) -> None:
    """Remove a dead upload's record (its image is deleted or settled)."""
    if not _ID.match(image_id):
        return
    path = directory(conversion_dir) / (image_id + _SUFFIX)
    try:
        fd = os.open(
            path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        )
    except OSError:
        return
    try:
        # never the record of a live upload
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)
