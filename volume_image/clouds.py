"""Read one cloud from ``clouds.yaml``, as the ``openstack`` client does.

Only what the command line needs: the auth type and its options, region,
interface and TLS verification.  ``secure.yaml`` is merged in, so
passwords can live apart.  Files are looked for where openstacksdk looks:
``$OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``,
``~/.config/openstack/clouds.yaml``, ``/etc/openstack/clouds.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Cloud", "CloudError", "find_files", "load_cloud"]


class CloudError(Exception):
    """The cloud cannot be read: no file, no such cloud, bad YAML."""


@dataclasses.dataclass(frozen=True)
class Cloud:
    """One entry of ``clouds:``."""

    name: str
    auth_type: str
    auth: Mapping[str, Any]
    region_name: str | None = None
    interface: str | None = None
    #: True, False, or the path of a CA bundle
    verify: bool | str = True


def _dirs(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME", str(Path.home())))
    return [Path.cwd(), home / ".config" / "openstack", Path("/etc/openstack")]


def find_files(name: str, env: Mapping[str, str] = os.environ) -> list[Path]:
    """The existing ``name`` files (``clouds.yaml``, ``secure.yaml``), in
    the order they are looked for.
    """
    found = []
    override = env.get(
        "OS_CLIENT_CONFIG_FILE"
        if name == "clouds.yaml"
        else "OS_CLIENT_SECURE_FILE"
    )
    if override:
        found.append(Path(override))
    found += [d / name for d in _dirs(env)]
    return [p for p in found if p.is_file()]


def _read(path: Path) -> dict[str, Any]:
    # imported here: most commands never read clouds.yaml
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CloudError(f"cannot read {path}: {exc}") from exc
    clouds = (doc or {}).get("clouds") if isinstance(doc, dict) else None
    if not isinstance(clouds, dict):
        raise CloudError(f"{path} has no 'clouds:' mapping")
    return clouds


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_cloud(name: str, env: Mapping[str, str] = os.environ) -> Cloud:
    """Read cloud ``name`` from the first ``clouds.yaml`` found.

    :raises CloudError: no file, no such cloud, or an unusable entry.
    """
    files = find_files("clouds.yaml", env)
    if not files:
        raise CloudError(
            "no clouds.yaml found (looked in $OS_CLIENT_CONFIG_FILE, ./, "
            "~/.config/openstack/, /etc/openstack/)"
        )
    clouds = _read(files[0])
    if name not in clouds:
        raise CloudError(
            f"{files[0]} has no cloud {name!r}; it has: "
            + (", ".join(sorted(clouds)) or "none")
        )
    entry = clouds[name]
    for secure in find_files("secure.yaml", env)[:1]:
        entry = _merge(entry, _read(secure).get(name) or {})
    if not isinstance(entry, dict) or not isinstance(
        entry.get("auth", {}), dict
    ):
        raise CloudError(f"cloud {name!r} in {files[0]} is not a mapping")
    verify: bool | str = entry.get("verify", True)
    if verify is not False and entry.get("cacert"):
        verify = str(entry["cacert"])
    return Cloud(
        name=name,
        auth_type=str(entry.get("auth_type", "password")),
        auth=dict(entry.get("auth", {})),
        region_name=entry.get("region_name"),
        interface=entry.get("interface"),
        verify=verify,
    )
