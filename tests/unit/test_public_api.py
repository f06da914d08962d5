"""The public API is exactly what __all__ lists."""

import volume_image

EXPECTED = {
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
}


def test_exports_are_locked() -> None:
    assert set(volume_image.__all__) == EXPECTED
    for name in volume_image.__all__:
        assert hasattr(volume_image, name), name


def test_version_comes_from_the_installed_distribution() -> None:
    from importlib import metadata

    assert volume_image.__version__ == metadata.version("volume_image")
