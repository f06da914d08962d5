"""volume_image: the block-storage side of "upload a volume to an image"
with Glance multi-store.

The public API is what ``__all__`` lists; everything else may change.
"""

from volume_image.config import Settings, list_opts, register_opts
from volume_image.errors import (
    GlanceError,
    SpecError,
    UploadError,
    VolumeImageError,
)
from volume_image.glance import GlanceClient
from volume_image.hooks import ExtraSpecsHook
from volume_image.specs import SplitSpecs, split_extra_specs
from volume_image.stores import StoreCatalog, StoreInfo
from volume_image.validation import StoreCatalogCache, Validator

__version__ = "0.1.0"

__all__ = [
    "ExtraSpecsHook",
    "GlanceClient",
    "GlanceError",
    "Settings",
    "SpecError",
    "SplitSpecs",
    "StoreCatalog",
    "StoreCatalogCache",
    "StoreInfo",
    "UploadError",
    "Validator",
    "VolumeImageError",
    "__version__",
    "list_opts",
    "register_opts",
    "split_extra_specs",
]
