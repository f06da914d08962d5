"""Format conversion with ``qemu-img`` and compression for the
``compressed`` container, into a temporary directory.

Differences from Cinder's upload path, on purpose: the source format is
always given (``-f``), so qemu-img never probes a guest-controlled header;
free space is checked before anything is written; and the output's format
is checked afterwards.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from volume_image import errors

__all__ = [
    "CONVERTIBLE_FORMATS",
    "compress",
    "convert",
    "make_workdir",
    "qemu_img_info",
    "sweep_stale_workdirs",
]

#: disk formats we convert to, with qemu-img's name for each
CONVERTIBLE_FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
}
LOG = logging.getLogger(__name__)

# a work directory names the process that made it, so that one left by a
# killed process can be told from one in use
_WORKDIR = re.compile(r"^volume_image-(\d+)-")

# metadata headroom on top of the data itself
_OVERHEAD = 16 * 1024 * 1024
_POLL = 0.2


def make_workdir(parent: str) -> Path:
    """A new private directory for one upload's temporary files."""
    return Path(
        tempfile.mkdtemp(prefix=f"volume_image-{os.getpid()}-", dir=parent)
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_workdirs(parent: str) -> list[Path]:
    """Remove work directories whose process is gone (killed mid-upload).

    Only directories named by :func:`make_workdir` whose process no longer
    exists are removed, so ``parent`` must be local to this host (and PID
    namespace), as ``[volume_image] conversion_dir`` is.

    :returns: what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _WORKDIR.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        if _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        LOG.info("removed %s, left by a process that is gone", entry.path)
        removed.append(Path(entry.path))
    return removed


def qemu_img_info(path: str | os.PathLike[str], fmt: str) -> dict[str, object]:
    """``qemu-img info --output=json`` with an explicit format.

    :raises ConversionError: qemu-img failed.
    """
    proc = subprocess.run(
        ["qemu-img", "info", "-f", fmt, "--output=json", os.fspath(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise errors.ConversionError(
            f"qemu-img info failed on {os.fspath(path)}: {proc.stderr.strip()}"
        )
    info: dict[str, object] = json.loads(proc.stdout)
    return info


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise errors.InsufficientSpace(
            f"{directory} has {free} bytes free but the conversion may need "
            f"{needed}; free space there or set [volume_image] "
            "conversion_dir to a larger file system"
        )


def _run(cmd: list[str], cancel: threading.Event | None) -> None:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        while True:
            try:
                _, stderr = proc.communicate(timeout=_POLL)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.wait()
                    raise errors.UploadCancelled(
                        "upload cancelled during conversion"
                    ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode:
        raise errors.ConversionError(
            f"{' '.join(cmd[:2])} failed (exit {proc.returncode}): "
            f"{stderr.strip()}"
        )


def convert(
    source: str | os.PathLike[str],
    source_format: str,
    disk_format: str,
    workdir: Path,
    *,
    cancel: threading.Event | None = None,
) -> Path:
    """Convert ``source`` to ``disk_format`` in ``workdir``.

    :param source: a file or block device path.
    :param source_format: its format, given to qemu-img explicitly.
    :param disk_format: a key of :data:`CONVERTIBLE_FORMATS`.
    :param workdir: an existing temporary directory the caller removes.
    :param cancel: set to stop the conversion.
    :returns: the converted file.
    :raises InsufficientSpace: ``workdir`` is too small.
    :raises ConversionError: qemu-img failed or produced another format.
    :raises UploadCancelled: ``cancel`` was set.
    """
    fmt = CONVERTIBLE_FORMATS[disk_format]
    info = qemu_img_info(source, source_format)
    # allocated bytes bound the output of every target format; a sparse
    # volume needs only what it really holds
    actual = info.get("actual-size") or info.get("virtual-size") or 0
    assert isinstance(actual, int)
    _check_space(workdir, actual + _OVERHEAD)
    dest = workdir / f"image.{disk_format}"
    _run(
        [
            "qemu-img",
            "convert",
            "-f",
            source_format,
            "-O",
            fmt,
            os.fspath(source),
            os.fspath(dest),
        ],
        cancel,
    )
    result = qemu_img_info(dest, fmt)
    if result.get("format") != fmt:
        raise errors.ConversionError(
            f"converted to {fmt}, but qemu-img reads the result as "
            f"{result.get('format')}"
        )
    return dest


def compress(
    source: Path,
    size: int,
    workdir: Path,
    *,
    chunk_size: int = 1024 * 1024,
    cancel: threading.Event | None = None,
) -> Path:
    """Gzip ``source`` into ``workdir`` (the ``compressed`` container).

    :param source: a file or block device.
    :param size: its size in bytes (a block device's ``st_blocks`` is 0).

    :raises InsufficientSpace: ``workdir`` is too small.
    :raises UploadCancelled: ``cancel`` was set.
    """
    # gzip output can exceed its input by a few bytes per 64 KiB
    _check_space(workdir, size + _OVERHEAD)
    dest = workdir / (source.name + ".gz")
    with (
        open(source, "rb") as src,
        gzip.open(dest, "wb", compresslevel=6) as out,
    ):
        while chunk := src.read(chunk_size):
            if cancel is not None and cancel.is_set():
                raise errors.UploadCancelled(
                    "upload cancelled during compression"
                )
            out.write(chunk)
    return dest
