"""How the command lines reach Glance and the block-storage API: one
keystoneauth1 :class:`~keystoneauth1.session.Session`, and one
:class:`~keystoneauth1.adapter.Adapter` per service built from it
(keystoneauth1's split: the session is shared, the adapters are not).

Both command lines build their :class:`Connection` here, from
openstacksdk's config loader (``openstack.config``), so ``clouds.yaml``,
``secure.yaml``, ``OS_*`` and the ``--os-*`` flags mean the same in both:

* the ``openstack volume type store ...`` plugin, from the
  ``CloudRegion`` python-openstackclient already loaded
  (:func:`from_cloud_region`);
* ``volume-image``, from its own parsed arguments (:func:`load`), with
  openstacksdk when it is installed (the ``cli`` extra) and with
  keystoneauth1's argparse loading when it is not (Cinder's virtualenv has
  no openstacksdk: ``OS_*`` and ``--os-*`` still work there, clouds.yaml
  does not).

openstacksdk is imported only inside the functions that need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session

from volume_image import config
from volume_image.clients import blockstorage, glance

__all__ = [
    "SERVICE_TYPES",
    "CloudsUnavailable",
    "ConfigError",
    "Connection",
    "Service",
    "cloud_config",
    "from_cloud_region",
    "from_conf",
    "from_keystoneauth_args",
    "load",
    "register_argparse_arguments",
    "tokenless",
]

#: the services the commands talk to, Glance first (the primary service
#: of ``--os-endpoint-override`` and ``--os-interface``)
SERVICE_TYPES = ("image", blockstorage.SERVICE_TYPE)

CLI_EXTRA_HINT = "install openstacksdk (pip install 'volume_image[cli]')"


class ConfigError(Exception):
    """The cloud configuration cannot be used: no such cloud, a broken
    clouds.yaml, an unknown auth type (openstacksdk's ``ConfigException``,
    translated here so that callers need not import openstacksdk).
    """


class CloudsUnavailable(ConfigError):
    """``--os-cloud`` was asked for, and openstacksdk is not installed."""


@dataclasses.dataclass(frozen=True)
class Service:
    """How to find one service: the keystoneauth1 adapter arguments."""

    service_type: str
    interface: str | list[str] | None = None
    region_name: str | None = None
    endpoint_override: str | None = None
    service_name: str | None = None
    connect_retries: int = config.DEFAULT_CONNECT_RETRIES


@dataclasses.dataclass(frozen=True)
class Connection:
    """One session, and how to reach each service with it.

    :ivar session: carries the authentication, TLS and timeout.
    :ivar services: by service type (:data:`SERVICE_TYPES`); a service
        not listed is found in the catalog with the defaults.
    """

    session: ks_session.Session
    services: Mapping[str, Service] = dataclasses.field(default_factory=dict)

    def adapter(
        self, service_type: str, *, endpoint_override: str | None = None
    ) -> ks_adapter.Adapter:
        """An adapter for ``service_type`` on the shared session.

        :param endpoint_override: wins over the configured one.
        """
        svc = self.services.get(service_type) or Service(service_type)
        return ks_adapter.Adapter(
            self.session,
            service_type=svc.service_type,
            service_name=svc.service_name,
            interface=svc.interface,
            region_name=svc.region_name,
            endpoint_override=endpoint_override or svc.endpoint_override,
            connect_retries=svc.connect_retries,
        )

    def glance(self, settings: config.Settings) -> glance.GlanceClient:
        """The Glance client on this connection."""
        return glance.GlanceClient(
            self.adapter("image"),
            use_store_detail=settings.use_store_detail,
            max_response_bytes=settings.max_response_bytes,
            answer_deadline=settings.answer_deadline,
        )

    def block_storage(
        self, endpoint_override: str | None = None
    ) -> ks_adapter.Adapter:
        """An adapter for the block-storage API (``audit``'s types)."""
        return self.adapter(
            blockstorage.SERVICE_TYPE, endpoint_override=endpoint_override
        )


def _with_timeout(session: ks_session.Session) -> ks_session.Session:
    # openstack's sessions wait forever unless api_timeout is set; a
    # black-holed Glance must not hang a command (the upload's reads have
    # their own, longer timeout)
    if session.timeout is None:
        session.timeout = config.DEFAULT_TIMEOUT
    return session


def from_cloud_region(region: Any) -> Connection:
    """A connection from an openstacksdk ``CloudRegion``: clouds.yaml
    merged with ``OS_*`` and the flags, by openstacksdk's rules.

    :param region: an ``openstack.config.cloud_region.CloudRegion``
        (python-openstackclient's ``client_manager.sdk_connection.config``
        or :meth:`OpenStackConfig.get_one`); its session is used as is.
    """
    services = {}
    for service_type in SERVICE_TYPES:
        retries = region.get_connect_retries(service_type)
        services[service_type] = Service(
            service_type=region.get_service_type(service_type),
            interface=region.get_interface(service_type),
            region_name=region.get_region_name(service_type),
            endpoint_override=region.get_endpoint(service_type),
            service_name=region.get_service_name(service_type),
            connect_retries=(
                config.DEFAULT_CONNECT_RETRIES if retries is None else retries
            ),
        )
    return Connection(_with_timeout(region.get_session()), services)


def from_keystoneauth_args(args: argparse.Namespace) -> Connection:
    """A connection from keystoneauth1's own ``--os-*`` options, as
    registered by :func:`register_argparse_arguments` without openstacksdk.

    Without ``--os-auth-type`` the session has no authentication: a
    token-less Glance named by ``--os-endpoint-override``.

    :raises keystoneauth1.exceptions.ClientException: the options of the
        auth type are incomplete.
    """
    auth = ks_loading.load_auth_from_argparse_arguments(args)
    session = ks_loading.load_session_from_argparse_arguments(args, auth=auth)
    image = Service(
        service_type=args.os_service_type or "image",
        interface=args.os_interface,
        region_name=args.os_region_name,
        endpoint_override=args.os_endpoint_override,
        service_name=args.os_service_name,
    )
    return Connection(_with_timeout(session), _and_block_storage(image))


def from_conf(
    conf: Any, *, glance_group: str = config.GLANCE_GROUP
) -> Connection:
    """A connection from the ``[glance]`` options of a config file: the
    session and auth are Glance's; the block-storage API is found in the
    same catalog, with the same interface and region.

    :param conf: a ``ConfigOpts`` on which
        :func:`volume_image.config.register_opts` ran.
    :param glance_group: the group given to it as ``glance_group``.
    :raises keystoneauth1.exceptions.ClientException: incomplete options.
    """
    group = glance_group
    session_kw, adapter_kw = config.loader_defaults(conf, group)
    auth = ks_loading.load_auth_from_conf_options(conf, group)
    session = ks_loading.load_session_from_conf_options(
        conf, group, auth=auth, **session_kw
    )
    image = ks_loading.load_adapter_from_conf_options(
        conf, group, session=session, auth=auth, **adapter_kw
    )
    glance_service = Service(
        service_type=image.service_type or "image",
        interface=image.interface,
        region_name=image.region_name,
        endpoint_override=image.endpoint_override,
        service_name=image.service_name,
        connect_retries=(
            config.DEFAULT_CONNECT_RETRIES
            if image.connect_retries is None
            else image.connect_retries
        ),
    )
    return Connection(
        _with_timeout(session), _and_block_storage(glance_service)
    )


def _and_block_storage(image: Service) -> dict[str, Service]:
    """Glance's service, and the block-storage API found in the same
    catalog with the same interface, region and retries.
    """
    return {
        "image": image,
        blockstorage.SERVICE_TYPE: dataclasses.replace(
            image,
            service_type=blockstorage.SERVICE_TYPE,
            service_name=None,
            endpoint_override=None,
        ),
    }


def _cloud_files() -> list[str]:
    """Where openstacksdk looks for clouds.yaml, from openstacksdk itself
    (``openstack.config.loader.CONFIG_FILES``: the working directory, the
    user's and the site's config dirs, ``/etc/xdg/openstack`` and
    ``/etc/openstack``); none without openstacksdk, which alone reads
    them.
    """
    try:
        from openstack.config import loader
    except ImportError:
        return []
    return [str(path) for path in loader.CONFIG_FILES]


def clouds_wanted(argv: Sequence[str]) -> bool:
    """Whether this command line needs openstacksdk's loader: a cloud is
    named (``--os-cloud``, ``OS_CLOUD``), a clouds file is where
    openstacksdk looks for one, or help is asked for.  Otherwise
    keystoneauth1 reads the same ``OS_*`` and ``--os-*``.

    The search list is openstacksdk's own, so looking it up imports
    ``openstack.config`` (about 0.2 s of CPU) when no cloud is named;
    the loader itself is built only when a file is there.
    """
    if os.environ.get("OS_CLOUD") or os.environ.get("OS_CLIENT_CONFIG_FILE"):
        return True
    for arg in argv:
        if arg in ("-h", "--help") or arg.split("=")[0] == "--os-cloud":
            return True
    return any(os.path.exists(path) for path in _cloud_files())


def cloud_config(*, isolated: bool = False) -> Any:
    """openstacksdk's config loader (``clouds.yaml``, ``secure.yaml``,
    ``OS_*``), or None when openstacksdk is not installed.

    :param isolated: read neither files nor ``OS_*`` (for the docs, whose
        rendered help must not depend on who builds them).
    :raises ConfigError: a config file is broken.
    """
    try:
        from openstack import config as os_config
        from openstack import exceptions as os_exc
    except ImportError:
        return None
    try:
        return os_config.OpenStackConfig(
            load_yaml_config=not isolated,
            load_envvars=not isolated,
            app_name="volume-image",
        )
    except os_exc.ConfigException as exc:
        raise ConfigError(str(exc)) from exc


def register_argparse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str], loader: Any
) -> None:
    """Add ``--os-cloud``, the auth, session and adapter options.

    With openstacksdk (``loader`` not None) these are exactly
    ``openstack``'s: the auth options of the cloud's ``auth_type`` are
    known, and ``--os-image-endpoint-override`` and
    ``--os-block-storage-endpoint-override`` exist.  Without it they are
    keystoneauth1's, plus an ``--os-cloud`` that asks for the extra.

    :param argv: the arguments about to be parsed; the auth options of the
        ``--os-auth-type`` (or cloud) they name are added.
    :raises ConfigError: ``--os-cloud`` names no cloud, or the auth type
        is unknown.
    :raises keystoneauth1.exceptions.NoMatchingPlugin: no openstacksdk,
        and the auth type is unknown.
    """
    if loader is not None:
        from openstack import exceptions as os_exc

        try:
            # openstacksdk rewrites argv in place (os_x -> os-x): a copy
            loader.register_argparse_arguments(
                parser, list(argv), service_keys=list(SERVICE_TYPES)
            )
        except os_exc.ConfigException as exc:
            raise ConfigError(str(exc)) from exc
        # keystoneauth1's --os-interface defaults to "public" and
        # --insecure to False, which would override the cloud's interface
        # and insecure as if given: only the flags or OS_* may
        parser.set_defaults(
            os_interface=os.environ.get("OS_INTERFACE"), insecure=None
        )
        return
    parser.add_argument(
        "--os-cloud",
        metavar="<name>",
        default=os.environ.get("OS_CLOUD"),
        help="named cloud of clouds.yaml (env[OS_CLOUD]); needs "
        "openstacksdk: pip install 'volume_image[cli]'",
    )
    ks_loading.register_auth_argparse_arguments(parser, list(argv))
    ks_loading.register_session_argparse_arguments(parser)
    ks_loading.register_adapter_argparse_arguments(
        parser, service_type="image"
    )


# what of argparse's namespace is openstacksdk's: the --os-* options and
# keystoneauth1's session options
_SESSION_DESTS = frozenset({"insecure", "timeout", "collect_timing"})
# keystoneauth1's adapter options without a service prefix (--os-interface
# and --os-region-name are openstacksdk's too, for every service)
_PRIMARY_SERVICE_OPTIONS = (
    "endpoint_override",
    "service_type",
    "service_name",
    "api_version",
)


def load(
    args: argparse.Namespace, loader: Any, *, cloud: str | None
) -> Connection:
    """The connection the arguments describe.

    :param loader: :func:`cloud_config`'s result, or None.
    :param cloud: ``--os-cloud`` or ``$OS_CLOUD``; openstacksdk's default
        cloud (``OS_*`` variables) when None.
    :raises CloudsUnavailable: a cloud is named and there is no
        openstacksdk.
    :raises ConfigError: no such cloud, or unusable settings.
    :raises keystoneauth1.exceptions.ClientException: incomplete auth
        options.
    """
    if loader is None:
        if cloud:
            raise CloudsUnavailable(
                f"--os-cloud {cloud}: reading clouds.yaml needs "
                f"openstacksdk; {CLI_EXTRA_HINT}, or give OS_* variables "
                "or --os-* flags instead"
            )
        return from_keystoneauth_args(args)
    mine = {
        k: v
        for k, v in vars(args).items()
        if k.startswith("os_") or k in _SESSION_DESTS
    }
    # keystoneauth1's unprefixed adapter options belong to the primary
    # service, which openstacksdk does not know: say they are Glance's
    for option in _PRIMARY_SERVICE_OPTIONS:
        value = mine.pop(f"os_{option}", None)
        if value and not mine.get(f"os_image_{option}"):
            mine[f"os_image_{option}"] = value
    from openstack import exceptions as os_exc

    try:
        # get_one_cloud_osc, not get_one: flags and OS_* win over the
        # cloud's auth section, as in python-openstackclient (get_one lets
        # clouds.yaml win for auth options)
        region = loader.get_one_cloud_osc(
            cloud=cloud, argparse=argparse.Namespace(**mine)
        )
        return from_cloud_region(region)
    except os_exc.ConfigException as exc:
        raise ConfigError(str(exc)) from exc
    except TypeError as exc:
        # keystoneauth1's plugin refused an option: openstacksdk merged a
        # cloud's auth section (its default cloud when none is named, as
        # openstack does) into another auth type, e.g. auth_url into none
        default = loader.default_cloud
        raise ConfigError(
            f"the auth options do not fit the auth type ({exc}); without "
            f"--os-cloud, openstacksdk merges its default cloud {default!r} "
            "of clouds.yaml into the flags: name the cloud to use, or set "
            "OS_CLIENT_CONFIG_FILE to another file"
        ) from exc


def tokenless(args: argparse.Namespace, endpoint: str) -> Connection:
    """A connection without authentication to the Glance at ``endpoint``
    (a test or lab Glance), with the session options of the arguments
    (``--insecure``, ``--os-cacert``, ``--timeout``, ...).
    """
    session = ks_loading.load_session_from_argparse_arguments(args)
    block_storage = getattr(args, "os_block_storage_endpoint_override", None)
    return Connection(
        _with_timeout(session),
        {
            "image": Service("image", endpoint_override=endpoint),
            blockstorage.SERVICE_TYPE: Service(
                blockstorage.SERVICE_TYPE, endpoint_override=block_storage
            ),
        },
    )
