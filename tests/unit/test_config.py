"""Options: registered on a passed-in ConfigOpts, listed for the generator."""

import subprocess
import sys
from pathlib import Path

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
    "conversion_dir",
    "fail_open",
    "hash_algo",
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
    assert conf.glance.timeout == config.DEFAULT_TIMEOUT
    assert conf.glance.connect_retries == config.DEFAULT_CONNECT_RETRIES
    assert conf.glance.service_type == "image"
    settings = config.Settings.from_conf(conf)
    assert settings == config.Settings(conversion_dir=settings.conversion_dir)
    assert settings.conversion_dir


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


def test_register_opts_on_a_host_that_owns_glance() -> None:
    """Cinder declares [glance] region_name (and more) itself: ours must
    not collide, and the host's option keeps its meaning.
    """
    conf = cfg.ConfigOpts()
    host_opt = cfg.StrOpt("region_name", help="the host's own region")
    conf.register_opt(host_opt, group="glance")
    config.register_opts(conf)
    config.register_opts(conf)  # twice is fine too
    conf(args=[])
    assert conf.glance.region_name is None
    assert conf.glance.timeout == config.DEFAULT_TIMEOUT
    assert conf.volume_image.verify_upload is True
    # the host's option object is the one registered
    assert conf._groups["glance"]._opts["region_name"]["opt"] is host_opt
