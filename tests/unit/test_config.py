"""Options: registered on a passed-in ConfigOpts, listed for the generator."""

import subprocess
import sys
from pathlib import Path

import pytest
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from volume_image import config

ROOT = Path(__file__).parent.parent.parent
SAMPLE = ROOT / "doc" / "source" / "_static" / "volume_image.conf.sample"

OUR_OPTS = [
    "answer_deadline",
    "api_timeout",
    "chunk_size",
    "colocate_strict",
    "colocate_timeout",
    "colocate_with_base_image",
    "compress_on_upload",
    "conversion_dir",
    "fail_open",
    "hash_algo",
    "introspection_address_space_limit",
    "introspection_cpu_limit",
    "max_concurrent_uploads",
    "max_response_bytes",
    "operation_deadline",
    "rbd_direct_flatten",
    "rbd_direct_timeout",
    "rbd_direct_upload",
    "store_cache_ttl",
    "upload_read_timeout",
    "upload_retries",
    "upload_retry_delay",
    "use_store_detail",
    "verify_upload",
]


def test_option_names_snapshot() -> None:
    groups = dict(config.list_opts())
    assert sorted(o.dest for o in groups["volume_image"]) == OUR_OPTS
    glance = {o.dest for o in groups["glance"]}
    for name in (
        "auth_type",
        "endpoint_override",
        "valid_interfaces",
        "region_name",
        "timeout",
        "connect_retries",
        "password",
        "cafile",
    ):
        assert name in glance
    copy = {o.dest for o in groups["volume_image_copy"]}
    assert {"auth_type", "auth_section", "password", "username"} <= copy


def test_register_on_passed_conf_with_finite_defaults() -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    config.register_opts(conf)  # idempotent
    conf(args=[], default_config_files=[])
    # keystoneauth's options keep keystoneauth's defaults ...
    assert conf.glance.timeout is None
    # ... and our loaders give our values where the operator set none
    session_kw, adapter_kw = config.loader_defaults(conf)
    assert session_kw == {"timeout": config.DEFAULT_TIMEOUT}
    assert adapter_kw == {
        "service_type": "image",
        "connect_retries": config.DEFAULT_CONNECT_RETRIES,
    }
    settings = config.Settings.from_conf(conf)
    assert settings == config.Settings(conversion_dir=settings.conversion_dir)
    assert settings.conversion_dir


def test_loader_defaults_give_way_to_the_operator(tmp_path: Path) -> None:
    f = tmp_path / "v.conf"
    f.write_text("[glance]\ntimeout = 7\nconnect_retries = 0\n")
    conf = config.load([str(f)])
    assert config.loader_defaults(conf) == ({}, {"service_type": "image"})


def test_group_names_are_parameters() -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(
        conf, group="vi", glance_group="vi_glance", copy_group="vi_copy"
    )
    conf(args=[], default_config_files=[])
    assert "glance" not in conf and "volume_image" not in conf
    assert conf.vi.upload_retries == 3
    assert conf.vi_glance.timeout is None
    assert conf.vi_copy.auth_type is None
    assert config.Settings.from_conf(conf, "vi").upload_retries == 3
    config.register_adapter_opts(conf, "vi_glance")
    assert conf.vi_glance.endpoint_override is None


def test_settings_follow_the_file(tmp_path: Path) -> None:
    f = tmp_path / "v.conf"
    f.write_text(
        "[volume_image]\nstore_cache_ttl = 5\nupload_retries = 0\n"
        f"conversion_dir = {tmp_path}\n"
    )
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=["--config-file", str(f)], default_config_files=[])
    s = config.Settings.from_conf(conf)
    assert (s.store_cache_ttl, s.upload_retries, s.conversion_dir) == (
        5,
        0,
        str(tmp_path),
    )


def test_sample_config_is_current(tmp_path: Path) -> None:
    out = tmp_path / "sample.conf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--namespace",
            "volume_image",
            "--output-file",
            str(out),
        ],
        check=True,
    )
    assert out.read_text() == SAMPLE.read_text(), (
        "doc sample is stale: run 'make sample-config'"
    )


@pytest.mark.parametrize("host_first", [True, False])
def test_register_opts_on_a_host_that_owns_glance(host_first: bool) -> None:
    """A host declares [glance] region_name itself (Cinder does), with
    keystoneauth's session options: before or after us, both work; the
    host's options keep their declaration and their defaults.
    """
    conf = cfg.ConfigOpts()
    host_opt = cfg.StrOpt("region_name", help="the host's own region")

    def host() -> None:
        conf.register_opt(host_opt, group="glance")
        conf.register_opts(
            ks_loading.get_session_conf_options(), group="glance"
        )

    if host_first:
        host()
    config.register_opts(conf)
    config.register_opts(conf)  # twice is fine too
    if not host_first:
        host()
    conf(args=[])
    config.loader_defaults(conf)  # registers the adapter options
    assert conf.glance.region_name is None
    assert conf.glance.timeout is None
    assert conf.glance.endpoint_override is None
    assert conf.volume_image.verify_upload is True
    # the host's option object is the one registered
    assert conf._groups["glance"]._opts["region_name"]["opt"] is host_opt


def test_set_by_operator_and_the_limits(tmp_path: Path) -> None:
    f = tmp_path / "v.conf"
    f.write_text("[volume_image]\nintrospection_cpu_limit = 9\n")
    conf = config.load([str(f)])
    assert config.set_by_operator(conf, "introspection_cpu_limit")
    assert not config.set_by_operator(conf, "compress_on_upload")
    assert not config.set_by_operator(conf, "conversion_dir")
    settings = config.Settings.from_conf(conf)
    assert settings.compress_on_upload is True
    assert settings.qemu_img_limits == {
        "cpu_time": 9,
        "address_space": 1024**3,
    }
