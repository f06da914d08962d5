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


# Modules a configuration file or an entry point names: renaming one
# breaks a deployment, so they are public by path.
PUBLIC_MODULES = {
    "volume_image",
    "volume_image.config",  # oslo-config-generator: list_opts
    "volume_image.errors",
    "volume_image.api.middleware",  # api-paste.ini: filter_factory
    "volume_image.cinder.driver",  # cinder.conf: StoreAwareDriver
    "volume_image.cli.main",  # the volume-image script
    "volume_image.cli.osc.plugin",  # openstack.cli.extension
    "volume_image.cli.osc.v1",  # openstack.volume_image.v1
}

# Everything else is private to the package; the layout shows the parts.
PRIVATE_MODULES = {
    "volume_image.api",
    "volume_image.api.hook",
    "volume_image.cinder",
    "volume_image.cinder.rbd_direct",
    "volume_image.cli",
    "volume_image.cli.commands",
    "volume_image.cli.osc",
    "volume_image.clients",
    "volume_image.clients._transport",
    "volume_image.clients.blockstorage",
    "volume_image.clients.connection",
    "volume_image.clients.glance",
    "volume_image.core",
    "volume_image.core.audit",
    "volume_image.core.deadline",
    "volume_image.core.direct",
    "volume_image.core.glance_config",
    "volume_image.core.placement",
    "volume_image.core.specs",
    "volume_image.core.stores",
    "volume_image.core.sweep",
    "volume_image.core.text",
    "volume_image.core.validation",
    "volume_image.pipeline",
    "volume_image.pipeline.colocate",
    "volume_image.pipeline.confine",
    "volume_image.pipeline.convert",
    "volume_image.pipeline.copy_image",
    "volume_image.pipeline.glance_ops",
    "volume_image.pipeline.offload",
    "volume_image.pipeline.prepare",
    "volume_image.pipeline.records",
    "volume_image.pipeline.retry",
    "volume_image.pipeline.send",
    "volume_image.pipeline.slots",
    "volume_image.pipeline.stream",
    "volume_image.pipeline.types",
    "volume_image.pipeline.uploader",
    "volume_image.pipeline.verify",
}


def _modules() -> set[str]:
    import pkgutil

    found = {"volume_image"}
    for info in pkgutil.walk_packages(volume_image.__path__, "volume_image."):
        found.add(info.name)
    return found


def test_module_names_are_locked() -> None:
    """A new module is a decision: public (named by a config file or an
    entry point) or private; a moved one breaks configurations.
    """
    assert _modules() == PUBLIC_MODULES | PRIVATE_MODULES


def test_entry_points_name_public_modules() -> None:
    from importlib import metadata

    named = {
        ep.value.split(":")[0]
        for ep in metadata.distribution("volume_image").entry_points
    }
    assert named <= PUBLIC_MODULES


def test_the_pure_core_imports_no_io_layer() -> None:
    """core/ imports nothing of clients/, pipeline/ or the faces, and no
    keystoneauth1 or requests: it is the part tested without mocks.
    """
    import ast
    from pathlib import Path

    core = Path(volume_image.__file__).parent / "core"
    banned = (
        "volume_image.clients",
        "volume_image.pipeline",
        "volume_image.api",
        "volume_image.cinder",
        "volume_image.cinder.rbd_direct",
        "volume_image.cli",
        "keystoneauth1",
        "requests",
        "urllib3",
        "subprocess",
    )
    for path in core.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(banned), (path.name, name)
