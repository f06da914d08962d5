"""python-openstackclient's plugin interface (entry point
``openstack.cli.extension``).

``openstack`` imports this module for every command it runs, so it
imports nothing heavy; the client is built on first use, from the
``CloudRegion`` that ``openstack`` loaded (clouds.yaml, ``OS_*``,
``--os-*``), by the same code as ``volume-image``'s.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = [
    "API_NAME",
    "API_VERSIONS",
    "API_VERSION_OPTION",
    "DEFAULT_API_VERSION",
    "build_option_parser",
    "make_client",
]

#: ``client_manager.volume_image``; commands in ``openstack.volume_image.v1``
API_NAME = "volume_image"
API_VERSION_OPTION = "os_volume_image_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = ("1",)


def make_client(instance: Any) -> Any:
    """The connection the commands use.

    :param instance: python-openstackclient's ``ClientManager``, after
        authentication was set up.
    :returns: a :class:`volume_image.clients.connection.Connection` on
        ``openstack``'s own session.
    """
    from volume_image.clients import connection

    # sdk_connection.config is the CloudRegion osc-lib built, and its
    # session is client_manager.session
    return connection.from_cloud_region(instance.sdk_connection.config)


def build_option_parser(
    parser: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """Add the plugin's global option to ``openstack``'s parser."""
    parser.add_argument(
        "--os-volume-image-api-version",
        metavar="<volume-image-api-version>",
        default=os.environ.get("OS_VOLUME_IMAGE_API_VERSION"),
        help="volume_image command version, default="
        f"{DEFAULT_API_VERSION} (Env: OS_VOLUME_IMAGE_API_VERSION)",
    )
    return parser
