"""``register_opts`` on Cinder 29's real ``ConfigOpts``, in both orders.

Each case runs in a fresh process of the Cinder virtualenv's Python
(Cinder registers its options on the global ``CONF`` at import time):
Cinder's option modules are imported before or after
:func:`volume_image.config.register_opts`, and every option Cinder
declares must read as it does in a process without us.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import launcher

pytestmark = pytest.mark.functional

ROOT = Path(__file__).parents[2]

# Cinder's option modules, in an order that imports (image_utils before
# glance: the other way round is a circular import in Cinder 29)
SCRIPT = """
import json, sys
from oslo_config import cfg

CONF = cfg.CONF
order = sys.argv[1]


def cinder():
    import cinder.common.config, cinder.image.image_utils  # noqa
    import cinder.image.glance, cinder.volume.driver  # noqa


def ours():
    from volume_image import config
    config.register_opts(CONF)


if order == "ours-first":
    ours()
    cinder()
elif order == "cinder-first":
    cinder()
    ours()
else:
    cinder()
CONF(args=[], project="cinder", default_config_files=[])
out = {"values": {}}
for name in CONF:
    if isinstance(getattr(CONF, name), cfg.ConfigOpts.GroupAttr):
        for opt in CONF[name]:
            out["values"][f"{name}.{opt}"] = repr(CONF[name][opt])
    else:
        out["values"][f"DEFAULT.{name}"] = repr(CONF[name])
if order != "cinder-only":
    from volume_image import config
    from volume_image.clients import glance
    client = glance.GlanceClient.from_conf(CONF)
    out["adapter"] = {
        "service_type": client.adapter.service_type,
        "connect_retries": client.adapter.connect_retries,
        "region_name": client.adapter.region_name,
        "timeout": client.adapter.session.timeout,
    }
    out["settings"] = config.Settings.from_conf(CONF).upload_retries
    out["region_help"] = CONF._get_opt_info("region_name", "glance")[
        "opt"
    ].help
print(json.dumps(out))
"""


def _run(order: str) -> dict[str, Any]:
    python = launcher.ensure_venv("cinder") / "bin" / "python"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OS_", "PYTHON"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONWARNINGS"] = "ignore"
    done = subprocess.run(
        [str(python), "-c", SCRIPT, order],
        capture_output=True,
        text=True,
        env=env,
        # not the checkout: "-c" puts the working directory on sys.path
        cwd=launcher.ensure_venv("cinder"),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def cinder_alone() -> dict[str, str]:
    return dict(_run("cinder-only")["values"])


@pytest.mark.parametrize("order", ["ours-first", "cinder-first"])
def test_register_opts_in_either_order(
    order: str, cinder_alone: dict[str, str]
) -> None:
    got = _run(order)
    # every option Cinder declares reads as without us: no default of
    # the host changed (Cinder's [glance] timeout stays None), none lost
    changed = {
        key: (value, got["values"].get(key))
        for key, value in cinder_alone.items()
        if got["values"].get(key) != value
    }
    assert not changed
    assert cinder_alone["glance.timeout"] == "None"
    # Cinder's own [glance] region_name is the one declared
    assert got["region_help"].startswith("Name of glance region to use")
    # our loaders still give a finite timeout and our retries
    assert got["adapter"] == {
        "service_type": "image",
        "connect_retries": 3,
        "region_name": None,
        "timeout": 60.0,
    }
    assert got["settings"] == 3
