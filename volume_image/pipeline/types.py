"""The values an upload passes between its steps: what the caller asked
for (:class:`ImageMeta`) and what it produced (:class:`UploadResult`).
No I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from volume_image.core import placement

__all__ = ["ImageMeta", "UploadResult"]


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
