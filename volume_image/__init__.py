"""volume_image: the block-storage side of "upload a volume to an image"
with Glance multi-store.

The public API is what ``__all__`` lists; everything else may change.
"""

from importlib import metadata

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

try:
    __version__ = metadata.version("volume_image")
except metadata.PackageNotFoundError:  # imported from a source tree
    __version__ = "0+unknown"

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
