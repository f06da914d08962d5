"""volume_image: the block-storage side of "upload a volume to an image"
with Glance multi-store.

The public API is what ``__all__`` lists; everything else may change.
The names are loaded on first use (PEP 562): a process that imports one
part (the command line, the paste filter, the cinder-volume driver) does
not pay for the others at start-up.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers and readers
    from volume_image import errors
    from volume_image.api.hook import ExtraSpecsHook
    from volume_image.clients.glance import GlanceClient
    from volume_image.config import Settings, list_opts, register_opts
    from volume_image.core.specs import SplitSpecs, split_extra_specs
    from volume_image.core.stores import StoreCatalog, StoreInfo
    from volume_image.core.validation import StoreCatalogCache, Validator
    from volume_image.errors import (
        GlanceError,
        SpecError,
        UploadError,
        VolumeImageError,
    )
    from volume_image.pipeline.uploader import (
        ImageMeta,
        Source,
        Uploader,
        UploadResult,
    )

    __version__: str

#: public name -> the module that defines it
_WHERE = {
    "ExtraSpecsHook": "volume_image.api.hook",
    "GlanceClient": "volume_image.clients.glance",
    "GlanceError": "volume_image.errors",
    "ImageMeta": "volume_image.pipeline.uploader",
    "Settings": "volume_image.config",
    "Source": "volume_image.pipeline.uploader",
    "SpecError": "volume_image.errors",
    "SplitSpecs": "volume_image.core.specs",
    "StoreCatalog": "volume_image.core.stores",
    "StoreCatalogCache": "volume_image.core.validation",
    "StoreInfo": "volume_image.core.stores",
    "UploadError": "volume_image.errors",
    "UploadResult": "volume_image.pipeline.uploader",
    "Uploader": "volume_image.pipeline.uploader",
    "Validator": "volume_image.core.validation",
    "VolumeImageError": "volume_image.errors",
    "list_opts": "volume_image.config",
    "register_opts": "volume_image.config",
    "split_extra_specs": "volume_image.core.specs",
}


def _version() -> str:
    try:
        return metadata.version("volume_image")
    except metadata.PackageNotFoundError:  # imported from a source tree
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # importlib.metadata costs ~30 ms: only for who asks
        globals()[name] = version = _version()
        return version
    if name == "errors":
        return importlib.import_module("volume_image.errors")
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'volume_image' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ExtraSpecsHook",
    "GlanceClient",
    "GlanceError",
    "ImageMeta",
    "Settings",
    "Source",
    "SpecError",
    "SplitSpecs",
    "StoreCatalog",
    "StoreCatalogCache",
    "StoreInfo",
    "UploadError",
    "UploadResult",
    "Uploader",
    "Validator",
    "VolumeImageError",
    "__version__",
    "errors",
    "list_opts",
    "register_opts",
    "split_extra_specs",
]
