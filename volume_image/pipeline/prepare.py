"""Before the send: the data to send, from the volume converted and
compressed as the image's formats ask (qemu-img and gzip in
:mod:`volume_image.pipeline.convert`), in the upload's work directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from volume_image import errors
from volume_image.pipeline import convert
from volume_image.pipeline.stream import Source
from volume_image.pipeline.types import ImageMeta, Job

__all__ = ["payload"]


def payload(
    job: Job,
    meta: ImageMeta,
    workdir: Path,
    chunk_size: int,
    *,
    compress: bool = False,
    limits: Mapping[str, int] | None = None,
) -> Source:
    """What to send: ``job``'s source, or what conversion and compression
    made of it in ``workdir``.

    :param compress: ``qemu-img convert -c`` where the format can
        (Cinder's ``image_compress_on_upload``).
    :param limits: the process limits of ``qemu-img info``.
    :raises ConversionError: the disk format cannot be made.
    :raises SourceError: a conversion or compression of a file object.
    """
    src = data = job.src
    fmt = meta.disk_format
    # a header is inspected, and qemu-img rewrites the image from what it
    # read, also when the format stays: never sent unread
    if fmt != job.source_format or job.source_format != "raw":
        if fmt not in convert.CONVERTIBLE_FORMATS:
            raise errors.ConversionError(
                f"cannot convert to disk_format {fmt!r}; supported: "
                f"{', '.join(convert.CONVERTIBLE_FORMATS)}"
            )
        if src.path is None:
            raise errors.SourceError(
                "conversion needs a source path, not a file object"
            )
        data = Source(
            convert.convert(
                src.path,
                job.source_format,
                fmt,
                workdir,
                cancel=job.cancel,
                compress=compress,
                limits=limits,
            )
        )
    if meta.container_format == "compressed":
        if data.path is None:
            raise errors.SourceError(
                "compression needs a source path, not a file object"
            )
        data = Source(
            convert.compress(
                data.path,
                data.size,
                workdir,
                chunk_size=chunk_size,
                cancel=job.cancel,
            )
        )
    return data
