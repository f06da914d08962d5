"""The values an upload passes between its steps: what the caller asked
for (:class:`ImageMeta`), what one upload is (:class:`Job`), the image it
fills (:class:`Target`) and what it produced (:class:`UploadResult`).
No I/O here.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from volume_image.core import placement, stores
from volume_image.pipeline.stream import ProgressCallback, Source

__all__ = ["ImageMeta", "Job", "Target", "UploadResult"]


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What the new image is called and how its data is packaged.

    :ivar properties: further image fields and properties, sent as given
        to ``POST /v2/images``.
    """

    name: str
    disk_format: str = "raw"
    container_format: str = "bare"
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The ``POST /v2/images`` body."""
        return {
            **self.properties,
            "name": self.name,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
        }


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What an upload produced, as Glance confirmed it."""

    image_id: str
    store: str | None
    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    seconds: float
    attempts: int
    verified: bool
    #: images created for this upload: more than 1 when Glance left one
    #: stuck (its node died) and we replaced it with a new one
    images: int = 1
    #: why the image was kept without verification (Glance could not be
    #: asked afterwards), or None
    unverified_reason: str | None = None
    #: co-location with the base image: where the image went and each
    #: copy's outcome; None when co-location was not asked for
    colocation: placement.Colocation | None = None

    @property
    def throughput(self) -> float:
        """Bytes per second of the upload (copies not counted)."""
        return self.size / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        doc = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "colocation"
        }
        doc["colocation"] = (
            self.colocation.as_dict() if self.colocation else None
        )
        return doc


@dataclasses.dataclass(frozen=True)
class Job:
    """One :meth:`~volume_image.pipeline.uploader.Uploader.upload` call,
    with where it goes decided (by the volume type, or by co-location)
    before anything is created.

    The image's :class:`ImageMeta` travels beside it: with a caller's
    image and no meta, it is known only once that image has been read.
    """

    src: Source
    #: a caller's ``queued`` image to fill; None: we create one
    image_id: str | None
    #: the volume's own format, for qemu-img
    source_format: str
    base_image_ref: str | None
    #: the store named in the PUT; None: Glance's default
    store: str | None
    #: the store expected to hold the image; None: no multi-store
    target: stores.StoreInfo | None
    progress: ProgressCallback | None
    cancel: threading.Event | None
    #: when the call started (for the result's seconds)
    t0: float

    @property
    def cancelled(self) -> bool:
        """Whether the caller has cancelled the upload."""
        return self.cancel is not None and self.cancel.is_set()


@dataclasses.dataclass
class Target:
    """The image an upload is filling.

    Mutable on purpose: when a stuck image of ours is replaced during
    the send, the cleanup that follows a later failure must find the
    new one, whatever raised.
    """

    image_id: str
    created: bool
    images: int = 1
