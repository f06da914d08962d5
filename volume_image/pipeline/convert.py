"""Format conversion with ``qemu-img`` and compression for the
``compressed`` container, into a temporary directory.

A volume's bytes are written by its guest, so its header is hostile
input.  Before qemu-img touches a source that is not raw, oslo.utils'
format inspector reads the header in Python: the content must be the
format the caller named, and a backing file, an external data file or any
other failed safety check refuses the upload (qemu-img would otherwise
copy a host file into the image).  The volume is opened once, and
qemu-img reads that open file, with backing files disabled and confined
so that no other file can be opened (see :func:`convert`): a header
rewritten after the inspection cannot reach a host file either.
qemu-img runs under CPU-time and address-space limits, as in Cinder.  The
source format is always given (the ``driver``), so qemu-img never probes.
Free space is checked before anything is written, and the output is
inspected by content afterwards.

Every wait here suits an event loop: qemu-img is polled with sleeps
(green under eventlet), and gzip runs in a native thread
(:mod:`volume_image.offload`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
import re
import resource
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from volume_image import errors
from volume_image.core import sweep
from volume_image.pipeline import confine, offload

if TYPE_CHECKING:
    from oslo_utils import imageutils

# oslo.utils' inspector is imported where it is used: only conversions
# need it, and it costs the CLI ~50 ms

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
# killed process can be told from one in use; anyone may create names in
# a shared conversion_dir, so the PID is parsed strictly (sweep.parse_pid)
_WORKDIR = re.compile(r"^volume_image-([^-]*)-")

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
    if pid <= 0:  # 0 and negatives name process groups
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
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
        pid = sweep.parse_pid(match.group(1)) if match else None
        if pid is None or not entry.is_dir(follow_symlinks=False):
            continue  # not a name make_workdir gives
        if process_alive(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        LOG.info("removed %s, left by a process that is gone", entry.path)
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[int]:
    """The volume, opened once: everything after reads this inode."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise errors.SourceError(
            f"cannot read volume {os.fspath(path)}: {exc.strerror}"
        ) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _source_spec(fd: int, fmt: str) -> str:
    """qemu-img's name for the open volume: the fd, never a path, and
    never a backing file, whatever the header says when qemu-img reads it.
    """
    protocol = "host_device" if stat.S_ISBLK(os.fstat(fd).st_mode) else "file"
    spec = {
        "driver": fmt,
        "backing": None,
        "file": {"driver": protocol, "filename": f"/dev/fd/{fd}"},
    }
    return "json:" + json.dumps(spec, separators=(",", ":"))


def _confined(
    argv: list[str],
    fd: int,
    write_dir: Path | None,
    landlock: bool,
    limits: Mapping[str, int] | None,
) -> list[str]:
    # limits for ``info`` on an untrusted header (Cinder's); ``convert``
    # runs unlimited, as in Cinder: its CPU grows with the volume (and
    # with -c), but it is confined to the one file all the same
    unlimited = {
        "cpu_time": resource.RLIM_INFINITY,
        "address_space": resource.RLIM_INFINITY,
    }
    chosen = unlimited if limits is None else limits
    return confine.command(
        argv,
        cpu=chosen["cpu_time"],
        address_space=chosen["address_space"],
        read_fd=fd,
        write_dir=None if write_dir is None else os.fspath(write_dir),
        landlock=landlock,
    )


def qemu_img_info(
    source: str | os.PathLike[str] | int,
    fmt: str,
    limits: Mapping[str, int] | None = None,
    *,
    landlock: bool | None = None,
) -> imageutils.QemuImgInfo:
    """``qemu-img info --output=json`` of a volume (a path, or an open
    fd), with its format given, under ``limits`` (:data:`QEMU_IMG_LIMITS`
    by default) and, where
    the kernel has it, confined to that one file (see
    :mod:`volume_image.pipeline.confine`).

    :param limits: ``cpu_time`` (seconds) and ``address_space`` (bytes).
    :raises ConversionError: qemu-img failed or hit a limit.
    """
    from oslo_utils import imageutils

    if not isinstance(source, int):
        with _opened(source) as fd:
            return qemu_img_info(fd, fmt, limits, landlock=landlock)
    if landlock is None:
        landlock = confine.available()
    cmd = _confined(
        ["qemu-img", "info", "--output=json", _source_spec(source, fmt)],
        source,
        None,
        landlock,
        QEMU_IMG_LIMITS if limits is None else limits,
    )
    out = _run(cmd, None, None, pass_fds=(source,), what="qemu-img info")
    return imageutils.QemuImgInfo(out.decode(errors="replace"), format="json")


def _inspect(path: str, fmt: str, shown: str) -> None:
    from oslo_utils.imageutils import format_inspector

    name = _INSPECTOR_NAMES.get(fmt, fmt)
    found = format_inspector.detect_file_format(path)
    if found is None or found.NAME != name:
        got = "unrecognised" if found is None else found.NAME
        raise errors.UnsafeSource(
            f"{shown} is said to be {fmt} but its content is {got}; "
            "refusing to convert it"
        )
    found.safety_check()


def check_format(
    path: str | os.PathLike[str], fmt: str, *, shown: str | None = None
) -> None:
    """Check by content that ``path`` is a safe image in ``fmt``.

    The header is read in Python, never by qemu-img.  Raw data has no
    header to trust, so any content passes as ``raw``.

    :param fmt: qemu-img's name of the format (``vpc`` for VHD).
    :param shown: how messages name the file (``path`` by default).
    :raises UnsafeSource: the content is another format, cannot be
        parsed, names a backing file or external data file, or fails
        another safety check of oslo.utils' format inspector.
    """
    where = shown or os.fspath(path)
    if fmt == "raw":
        return
    if fmt not in SOURCE_FORMATS:
        raise errors.UnsafeSource(
            f"source format {fmt!r} is not one we inspect; supported: "
            + ", ".join(SOURCE_FORMATS)
        )
    from oslo_utils.imageutils import format_inspector

    try:
        offload.run(_inspect, os.fspath(path), fmt, where)
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
    cmd: list[str],
    workdir: Path | None,
    cancel: threading.Event | None,
    *,
    pass_fds: tuple[int, ...] = (),
    what: str | None = None,
) -> bytes:
    """Run ``cmd`` to the end, polling with sleeps (green under eventlet:
    a blocking wait, or ``communicate(timeout=)``, whose TimeoutExpired
    eventlet raises from the unpatched module, would hold the loop or
    escape), and kill it on cancel.

    :returns: its standard output (at most 1 MiB).
    """
    what = what or " ".join(cmd[:2])
    # output into files: a pipe nobody reads while polling could fill
    # and stall qemu-img
    with (
        tempfile.TemporaryFile(dir=workdir) as out,
        tempfile.TemporaryFile(dir=workdir) as err,
    ):
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=pass_fds,
        )
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
                f"{what} failed (exit {proc.returncode}): {stderr.strip()}"
            )
        out.seek(0)
        return out.read(1024 * 1024)


def _private_copy(fd: int, workdir: Path, size: int) -> Path:
    """A copy of the volume that only this process can change."""
    _check_space(workdir, size + _OVERHEAD)
    dest = workdir / "source"
    with (
        os.fdopen(os.dup(fd), "rb") as src,
        open(dest, "xb") as out,
    ):
        src.seek(0)
        shutil.copyfileobj(src, out, 1024 * 1024)
    return dest


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

    The volume is opened once; its header is inspected through that open
    file, and qemu-img gets the same file (``/dev/fd/N``), told never to
    open a backing file, and confined so that it can open no other file
    (:mod:`volume_image.pipeline.confine`): a header rewritten after the
    inspection can make the conversion fail, never copy a host file into
    the image.  Where the kernel cannot confine qemu-img, the volume is
    first copied into ``workdir``, and the copy, which nobody else can
    write, is what is inspected and converted.

    :param source: a file or block device path.
    :param source_format: its format, given to qemu-img explicitly.
    :param disk_format: a key of :data:`CONVERTIBLE_FORMATS`.
    :param workdir: an existing private directory the caller removes.
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
    shown = os.fspath(source)
    dest = workdir / f"image.{disk_format}"
    landlock = confine.available()
    with _opened(source) as fd:
        how = _How(compress, limits, cancel)
        if landlock:
            _convert_fd(fd, shown, source_format, fmt, dest, how, True)
        else:
            size = os.fstat(fd).st_size or _device_size(fd)
            copy = _private_copy(fd, workdir, size)
            with _opened(copy) as copy_fd:
                _convert_fd(
                    copy_fd, shown, source_format, fmt, dest, how, False
                )
            copy.unlink()
    try:
        check_format(dest, fmt)
    except errors.UnsafeSource as exc:
        raise errors.ConversionError(
            f"converted to {fmt}, but the result does not pass as {fmt}: {exc}"
        ) from exc
    return dest


def _device_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


@dataclasses.dataclass(frozen=True)
class _How:
    """How a conversion runs: compressed, qemu-img info's limits, cancel."""

    compress: bool
    limits: Mapping[str, int] | None
    cancel: threading.Event | None


def _convert_fd(
    fd: int,
    shown: str,
    source_format: str,
    fmt: str,
    dest: Path,
    how: _How,
    landlock: bool,
) -> None:
    check_format(f"/proc/self/fd/{fd}", source_format, shown=shown)
    info = qemu_img_info(fd, source_format, how.limits, landlock=landlock)
    if info.backing_file:
        # the inspector already refuses these; qemu-img is asked too
        raise errors.UnsafeSource(
            f"{shown} has a backing file; refusing to convert it"
        )
    # allocated bytes bound the output of every target format; a sparse
    # volume needs only what it really holds
    actual = info.disk_size or info.virtual_size or 0
    workdir = dest.parent
    _check_space(workdir, int(actual) + _OVERHEAD)
    argv = ["qemu-img", "convert", "-O", fmt]
    if how.compress and fmt in COMPRESSIBLE_FORMATS:
        argv.append("-c")
    argv.append(_source_spec(fd, source_format))
    _run(
        _confined([*argv, os.fspath(dest)], fd, workdir, landlock, None),
        workdir,
        how.cancel,
        pass_fds=(fd,),
        what="qemu-img convert",
    )


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
