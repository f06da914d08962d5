"""The public API is exactly what __all__ lists."""

import volume_image

EXPECTED = {
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
}


def test_exports_are_locked() -> None:
    assert set(volume_image.__all__) == EXPECTED
    for name in volume_image.__all__:
        assert hasattr(volume_image, name), name
