"""Format conversion with ``qemu-img`` and compression for the
``compressed`` container, into a temporary directory.

A volume's bytes are written by its guest, so its header is hostile
input.  Before qemu-img touches a source that is not raw, oslo.utils'
format inspector reads the header in Python: the content must be the
format the caller named, and a backing file, an external data file or any
other failed safety check refuses the upload (qemu-img would otherwise
copy a host file into the image).  ``qemu-img info`` runs under CPU-time
and address-space limits, as in Cinder.  The source format is always
given (``-f``), so qemu-img never probes.  Free space is checked before
anything is written, and the output is inspected by content afterwards.

Every wait here suits an event loop: qemu-img is polled with sleeps
(green under eventlet), and gzip runs in a native thread
(:mod:`volume_image.offload`).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from volume_image import errors
from volume_image.pipeline import offload

if TYPE_CHECKING:
    from oslo_utils import imageutils

# oslo.concurrency and oslo.utils' inspector are imported where they are
# used: only conversions need them, and they cost the CLI ~50 ms

__all__ = [
    "COMPRESSIBLE_FORMATS",
    "CONVERTIBLE_FORMATS",
    "QEMU_IMG_LIMITS",
    "SOURCE_FORMATS",
    "check_format",
    "compress",
    "convert",
    "make_workdir",
    "process_alive",
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
#: formats a source volume may be in (qemu-img's names; Glance's ``vhd``
#: is qemu-img's ``vpc``)
SOURCE_FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi")
#: qemu-img's format name -> the format inspector's
_INSPECTOR_NAMES = {"vpc": "vhd"}
#: Cinder's default limits for ``qemu-img info`` on untrusted images (CPU
#: seconds, bytes of address space: its image_introspection_cpu_limit and
#: image_introspection_address_space_limit): a crafted header must not
#: make it spin or eat memory.  The callers pass the configured ones.
QEMU_IMG_LIMITS = {"cpu_time": 60, "address_space": 1024**3}
#: formats whose clusters ``qemu-img convert -c`` compresses (Cinder's
#: COMPRESSIBLE_IMAGE_FORMATS)
COMPRESSIBLE_FORMATS = ("qcow2",)
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


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's too)."""
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
        if process_alive(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        LOG.info("removed %s, left by a process that is gone", entry.path)
        removed.append(Path(entry.path))
    return removed


def qemu_img_info(
    path: str | os.PathLike[str],
    fmt: str,
    limits: Mapping[str, int] | None = None,
) -> imageutils.QemuImgInfo:
    """``qemu-img info --output=json`` with an explicit format, under
    ``limits`` (:data:`QEMU_IMG_LIMITS` by default).

    :param limits: ``cpu_time`` (seconds) and ``address_space`` (bytes).
    :raises ConversionError: qemu-img failed or hit a limit.
    """
    from oslo_concurrency import processutils
    from oslo_utils import imageutils

    try:
        out, _ = processutils.execute(
            "qemu-img",
            "info",
            "-f",
            fmt,
            "--output=json",
            os.fspath(path),
            prlimit=processutils.ProcessLimits(
                **(QEMU_IMG_LIMITS if limits is None else limits)
            ),
        )
    except processutils.ProcessExecutionError as exc:
        raise errors.ConversionError(
            f"qemu-img info failed on {os.fspath(path)} (exit "
            f"{exc.exit_code}): {(exc.stderr or '').strip()}"
        ) from exc
    return imageutils.QemuImgInfo(out, format="json")


def _inspect(path: str, fmt: str) -> None:
    from oslo_utils.imageutils import format_inspector

    name = _INSPECTOR_NAMES.get(fmt, fmt)
    found = format_inspector.detect_file_format(path)
    if found is None or found.NAME != name:
        got = "unrecognised" if found is None else found.NAME
        raise errors.UnsafeSource(
            f"{path} is said to be {fmt} but its content is {got}; "
            "refusing to convert it"
        )
    found.safety_check()


def check_format(path: str | os.PathLike[str], fmt: str) -> None:
    """Check by content that ``path`` is a safe image in ``fmt``.

    The header is read in Python, never by qemu-img.  Raw data has no
    header to trust, so any content passes as ``raw``.

    :param fmt: qemu-img's name of the format (``vpc`` for VHD).
    :raises UnsafeSource: the content is another format, cannot be
        parsed, names a backing file or external data file, or fails
        another safety check of oslo.utils' format inspector.
    """
    if fmt == "raw":
        return
    if fmt not in SOURCE_FORMATS:
        raise errors.UnsafeSource(
            f"source format {fmt!r} is not one we inspect; supported: "
            + ", ".join(SOURCE_FORMATS)
        )
    from oslo_utils.imageutils import format_inspector

    where = os.fspath(path)
    try:
        offload.run(_inspect, where, fmt)
    except format_inspector.SafetyCheckFailed as exc:
        raise errors.UnsafeSource(
            f"{where} ({fmt}) failed the safety check: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(exc.failures.items()))
            + ". A volume with a backing file or an external data file "
            "would copy host data into the image"
        ) from exc
    except format_inspector.ImageFormatError as exc:
        raise errors.UnsafeSource(
            f"{where} cannot be parsed as {fmt}: {exc}"
        ) from exc
    except OSError as exc:
        raise errors.SourceError(
            f"cannot read volume {where}: {exc.strerror}"
        ) from exc


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise errors.InsufficientSpace(
            f"{directory} has {free} bytes free but the conversion may need "
            f"{needed}; free space there or set [volume_image] "
            "conversion_dir to a larger file system"
        )


def _run(
    cmd: list[str], workdir: Path, cancel: threading.Event | None
) -> None:
    """Run ``cmd`` to the end, polling with sleeps (green under eventlet:
    a blocking wait, or ``communicate(timeout=)``, whose TimeoutExpired
    eventlet raises from the unpatched module, would hold the loop or
    escape), and kill it on cancel.
    """
    # stderr into a file: a pipe nobody reads while polling could fill
    # and stall qemu-img
    with tempfile.TemporaryFile(dir=workdir) as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            while proc.poll() is None:
                if cancel is not None and cancel.is_set():
                    raise errors.UploadCancelled(
                        "upload cancelled during conversion"
                    )
                time.sleep(_POLL)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode:
            err.seek(0)
            stderr = err.read(64 * 1024).decode(errors="replace")
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
    compress: bool = False,
    limits: Mapping[str, int] | None = None,
) -> Path:
    """Convert ``source`` to ``disk_format`` in ``workdir``.

    :param source: a file or block device path.
    :param source_format: its format, given to qemu-img explicitly.
    :param disk_format: a key of :data:`CONVERTIBLE_FORMATS`.
    :param workdir: an existing temporary directory the caller removes.
    :param cancel: set to stop the conversion.
    :param compress: compress the output's clusters (``qemu-img convert
        -c``) when its format can (:data:`COMPRESSIBLE_FORMATS`), as
        Cinder does with ``image_compress_on_upload``.
    :param limits: for ``qemu-img info`` (see :func:`qemu_img_info`).
    :returns: the converted file.
    :raises InsufficientSpace: ``workdir`` is too small.
    :raises UnsafeSource: the source is not a safe image in
        ``source_format`` (see :func:`check_format`).
    :raises ConversionError: qemu-img failed, or its output does not
        pass as ``disk_format``.
    :raises UploadCancelled: ``cancel`` was set.
    """
    fmt = CONVERTIBLE_FORMATS[disk_format]
    check_format(source, source_format)
    info = qemu_img_info(source, source_format, limits)
    if info.backing_file:
        # the inspector already refuses these; qemu-img is asked too
        raise errors.UnsafeSource(
            f"{os.fspath(source)} has a backing file; refusing to convert it"
        )
    # allocated bytes bound the output of every target format; a sparse
    # volume needs only what it really holds
    actual = info.disk_size or info.virtual_size or 0
    _check_space(workdir, int(actual) + _OVERHEAD)
    dest = workdir / f"image.{disk_format}"
    cmd = ["qemu-img", "convert", "-f", source_format, "-O", fmt]
    if compress and fmt in COMPRESSIBLE_FORMATS:
        cmd.append("-c")
    _run([*cmd, os.fspath(source), os.fspath(dest)], workdir, cancel)
    try:
        check_format(dest, fmt)
    except errors.UnsafeSource as exc:
        raise errors.ConversionError(
            f"converted to {fmt}, but the result does not pass as {fmt}: {exc}"
        ) from exc
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
    # seconds of CPU per GiB: never on an event loop
    offload.run(_gzip, source, dest, chunk_size, cancel)
    return dest


def _gzip(
    source: Path, dest: Path, chunk_size: int, cancel: threading.Event | None
) -> None:
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
