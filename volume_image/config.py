"""Every option of ``volume_image``, declared in one place.

Two groups:

``[glance]``
    How to reach Glance: keystoneauth1's session, auth and adapter options,
    as in Nova's ``[glance]`` group (``auth_type``, ``endpoint_override``,
    ``valid_interfaces``, ``region_name``, ``timeout``, ...).
``[volume_image]``
    Our own behaviour: catalog cache, upload retries, conversion,
    co-location with the base image.
``[volume_image_copy]``
    Optional keystoneauth1 credentials for the ``copy-image`` requests of
    co-location (Glance allows them to admins only by default).  Unset,
    the copies use the upload's credentials.

Options are registered on a :class:`~oslo_config.cfg.ConfigOpts` that the
caller passes in; nothing here reads a global ``CONF``.  :func:`list_opts`
is the ``oslo.config.opts`` entry point for ``oslo-config-generator``.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Sequence
from typing import Any

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

__all__ = [
    "COPY_GROUP",
    "GLANCE_GROUP",
    "GROUP",
    "Settings",
    "list_opts",
    "load",
    "loader_defaults",
    "register_adapter_opts",
    "register_opts",
    "set_by_operator",
]

GROUP = "volume_image"
GLANCE_GROUP = "glance"
COPY_GROUP = "volume_image_copy"
#: see [volume_image] colocate_timeout
DEFAULT_COLOCATE_TIMEOUT = 1800.0

# A request to Glance must not hang a worker for glanceclient's 600 s, or
# forever (keystoneauth's default): our loaders pass these where the
# options are unset (never as the options' defaults: see register_opts).
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_RETRIES = 3
_GLANCE_DEFAULTS: dict[str, Any] = {
    "service_type": "image",
    "timeout": DEFAULT_TIMEOUT,
    "connect_retries": DEFAULT_CONNECT_RETRIES,
}

_opts = [
    cfg.IntOpt(
        "store_cache_ttl",
        default=60,
        min=0,
        help="Seconds a fetched store list (GET /v2/info/stores) is reused. "
        "Validation with a warm cache makes no request to Glance. "
        "0 asks Glance every time.",
    ),
    cfg.BoolOpt(
        "use_store_detail",
        default=True,
        help="Ask GET /v2/info/stores/detail first, to learn each store's "
        "type and weight. Needs the admin role; on 403 the basic list is "
        "used (asked again at each refresh, as one client may serve "
        "callers with other roles). Validation needs only the basic list: "
        "set false where the credentials are never admin's.",
    ),
    cfg.IntOpt(
        "upload_retries",
        default=3,
        min=0,
        help="How many times a failed upload is sent again. Only "
        "connection failures, 503 and a stream cut mid-way are retried, "
        "always from byte 0 of the source; never a timeout (a Glance "
        "that stopped reading would cost as long again).",
    ),
    cfg.FloatOpt(
        "upload_retry_delay",
        default=1.0,
        min=0,
        help="Seconds before the first retry of an upload; each further "
        "retry waits twice as long, at most 30 seconds.",
    ),
    cfg.FloatOpt(
        "upload_read_timeout",
        default=300.0,
        min=1,
        help="Seconds one socket operation of an upload may wait (sending "
        "a chunk, or Glance's answer after the last byte). Finite, so a "
        "dead Glance is noticed; per operation, so a long upload never "
        "trips it.",
    ),
    cfg.IntOpt(
        "chunk_size",
        default=1024 * 1024,
        min=4096,
        help="Bytes read from the source and sent at a time. Memory use "
        "of an upload stays near this size whatever the volume size.",
    ),
    cfg.BoolOpt(
        "verify_upload",
        default=True,
        help="After an upload, read the image back and compare status, "
        "size, one digest (os_hash_value, or the md5 checksum where "
        "Glance reports no other) and stores with what was sent. A "
        "mismatch deletes the image. Off: nothing is hashed.",
    ),
    cfg.StrOpt(
        "hash_algo",
        default="sha512",
        help="The os_hash_algo Glance uses (its hashing_algorithm "
        "option): the one digest an upload computes while streaming. "
        "When Glance reports another, the source is read once more for "
        "it, and later uploads to that Glance stream Glance's.",
    ),
    cfg.StrOpt(
        "conversion_dir",
        help="Directory for the temporary file of a qemu-img conversion "
        "or compression. Defaults to the system temporary directory; "
        "inside cinder-volume, to Cinder's image_conversion_dir. It "
        "must be local to the host: work directories left by a process "
        "that is gone are removed when an uploader starts.",
    ),
    cfg.BoolOpt(
        "compress_on_upload",
        default=True,
        help="Compress the clusters of a qcow2 image made by conversion "
        "(qemu-img convert -c), as Cinder's image_compress_on_upload "
        "does: a far smaller image for a little more CPU. Inside "
        "cinder-volume, Cinder's image_compress_on_upload decides unless "
        "this option is set.",
    ),
    cfg.IntOpt(
        "introspection_cpu_limit",
        default=60,
        min=1,
        help="CPU seconds 'qemu-img info' may use on a source or a "
        "converted image, as Cinder's image_introspection_cpu_limit: a "
        "crafted header must not make it spin. Inside cinder-volume, "
        "Cinder's option decides unless this one is set.",
    ),
    cfg.IntOpt(
        "introspection_address_space_limit",
        default=1,
        min=1,
        help="GiB of address space 'qemu-img info' may use, as Cinder's "
        "image_introspection_address_space_limit. Inside cinder-volume, "
        "Cinder's option decides unless this one is set.",
    ),
    cfg.IntOpt(
        "max_concurrent_uploads",
        default=4,
        min=1,
        help="Uploads one process runs at once; more wait for a slot.",
    ),
    cfg.IntOpt(
        "max_response_bytes",
        default=16 * 1024 * 1024,
        min=1024,
        help="The most bytes read from one answer of Glance or of the "
        "block-storage API. Their answers are kilobytes; a longer one "
        "is refused as an error instead of filling memory.",
    ),
    cfg.FloatOpt(
        "answer_deadline",
        default=120.0,
        min=1,
        help="Seconds one answer of Glance may take to arrive whole, "
        "however slowly it trickles (the per-read timeout alone never "
        "trips on a server sending a byte a second). Not the upload's own "
        "data, which takes as long as the volume needs.",
    ),
    cfg.FloatOpt(
        "operation_deadline",
        default=300.0,
        min=1,
        help="Seconds one operation may spend waiting on Glance, all its "
        "requests, retries and pauses between them together: a store "
        "listing or validation, an audit, or the Glance side of an upload "
        "(creating, checking, verifying and cleaning up the image). "
        "Sending and converting the volume's data does not count: each "
        "socket operation of the send is bounded by upload_read_timeout "
        "instead. Past it, the operation stops as 'Glance is "
        "unavailable' and cleans up.",
    ),
    cfg.FloatOpt(
        "api_timeout",
        default=5.0,
        min=0.1,
        help="API hook and filter only: seconds one request to Glance may "
        "take on an API's request path, never retried. A Glance that "
        "hangs then costs a write at most this long before its 503 (or, "
        "with fail_open, its warning).",
    ),
    cfg.BoolOpt(
        "fail_open",
        default=False,
        help="API filter only: when Glance cannot be asked, let an "
        "image_service:store_id write through with a logged warning "
        "instead of answering 503.",
    ),
    cfg.BoolOpt(
        "colocate_with_base_image",
        default=False,
        help="When a volume created from an image is uploaded and its "
        "volume type names no store (no image_service:store_id), put the "
        "new image in every writable store that holds the base image: "
        "upload into one of them (Glance's default store if it is one, "
        "else the first in the base image's stores order), then ask "
        "Glance to copy it to the others (copy-image import). Glance "
        "itself ignores Cinder's x-openstack-base-image-ref header.",
    ),
    cfg.BoolOpt(
        "colocate_strict",
        default=False,
        help="Co-location: fail the upload (and delete the image) when a "
        "store of the base image did not get the copy, also when the "
        "copy was not permitted (403) or did not finish in time. Off: "
        "the upload succeeds and the result says which stores were not "
        "copied and why.",
    ),
    cfg.FloatOpt(
        "colocate_timeout",
        default=DEFAULT_COLOCATE_TIMEOUT,
        min=1,
        help="Co-location: the most seconds to wait for Glance's copies "
        "of one image to end. A copy takes about 2.3 times the upload "
        "time per store (measured on Glance 33); raise it for volumes "
        "of hundreds of GiB. Copies still running then are reported as "
        "unfinished (Glance may still complete them).",
    ),
    cfg.BoolOpt(
        "rbd_direct_upload",
        default=True,
        help="cinder-volume with an RBD backend: when a raw volume goes "
        "to an rbd store on the volume's own Ceph cluster (same fsid), "
        "make the image inside Ceph (snapshot, clone, flatten) and "
        "register its location with Glance instead of streaming every "
        "byte through the volume host and Glance. Needs the service "
        "token ([service_user] send_service_user_token, a user with the "
        "service role) and Ceph write caps on the store's pool; without "
        "them, or for another cluster or a non-raw format, the upload "
        "streams as usual and the log says why.",
    ),
    cfg.StrOpt(
        "rbd_direct_flatten",
        default="mgr",
        choices=[
            (
                "mgr",
                "ceph-mgr flattens the clone (rbd task add flatten): "
                "no image bytes cross the volume host; falls back to local "
                "when the mgr cannot",
            ),
            (
                "local",
                "librbd flattens it in cinder-volume: the "
                "allocated bytes are read and written by the volume host",
            ),
        ],
        help="Who copies the volume's data into the image on the "
        "same-cluster fast path.",
    ),
    cfg.FloatOpt(
        "rbd_direct_timeout",
        default=600.0,
        min=1,
        help="Same-cluster fast path: the most seconds for the flatten "
        "and for Glance to make the image active with its hash. Past "
        "it the image is removed and the upload fails.",
    ),
]


def _unique(opts: list[cfg.Opt]) -> list[cfg.Opt]:
    # one option may come from two of keystoneauth's lists
    unique: dict[str, cfg.Opt] = {}
    for opt in opts:
        unique.setdefault(opt.dest, opt)
    return list(unique.values())


def _glance_registration_opts() -> list[cfg.Opt]:
    """The Glance group's options registered by :func:`register_opts`:
    keystoneauth's session and auth options, its own objects, equal to
    those any keystoneauth user registers (Cinder's ``[glance]`` does), so
    either may come first.  The auth plugin's options are registered by
    keystoneauth when the plugin is loaded; the adapter's by
    :func:`register_adapter_opts`.
    """
    return _unique(
        ks_loading.get_session_conf_options()
        + ks_loading.get_auth_common_conf_options()
    )


def _adapter_opts() -> list[cfg.Opt]:
    return _unique(
        ks_loading.get_adapter_conf_options(include_deprecated=False)
    )


def _glance_opts() -> list[cfg.Opt]:
    """Every option of the Glance group, for the sample: the value our
    loaders use when one of :data:`_GLANCE_DEFAULTS` is unset is shown as
    its sample default (on a copy: the registered objects are
    keystoneauth's, unchanged).
    """
    opts = _unique(
        _glance_registration_opts()
        + ks_loading.get_auth_plugin_conf_options("password")
        + _adapter_opts()
    )
    for i, opt in enumerate(opts):
        if opt.dest in _GLANCE_DEFAULTS:
            opts[i] = copy.copy(opt)
            opts[i].sample_default = _GLANCE_DEFAULTS[opt.dest]
    return opts


def _copy_opts() -> list[cfg.Opt]:
    """The ``[volume_image_copy]`` options for the sample: keystoneauth's
    auth options with the password plugin's, as for ``[glance]``.
    """
    return _unique(
        ks_loading.get_auth_common_conf_options()
        + ks_loading.get_auth_plugin_conf_options("password")
    )


def _register_shared(
    conf: cfg.ConfigOpts, opts: list[cfg.Opt], group: str
) -> None:
    """Register ``opts`` in ``group``, a group a host may own too: an
    option the host already declared under one of the names serves, with
    its meaning and its default.
    """
    for opt in opts:
        try:
            conf.register_opt(opt, group=group)
        except cfg.DuplicateOptError:
            continue


def register_opts(
    conf: cfg.ConfigOpts,
    *,
    group: str = GROUP,
    glance_group: str = GLANCE_GROUP,
    copy_group: str = COPY_GROUP,
) -> None:
    """Register the options of ``volume_image`` on ``conf``.

    Safe to call more than once, and on a host service's own
    ``ConfigOpts`` before or after the host declares its options: in the
    Glance group (which Cinder and Nova own too) only keystoneauth's own
    session and auth options are registered, which equal the host's; an
    option the host declared otherwise keeps its declaration.  No
    default of an option is changed: where the operator leaves
    ``timeout``, ``connect_retries`` or ``service_type`` unset, our
    loaders pass :data:`DEFAULT_TIMEOUT` and the others to keystoneauth
    (see :func:`loader_defaults`).  The adapter options (``region_name``,
    ``endpoint_override``, ...) are registered when a client is loaded
    from the group (:func:`register_adapter_opts`), as keystoneauth
    registers an auth plugin's options when it loads the plugin: Cinder
    declares its own ``[glance] region_name``, at import time.

    The group names are parameters, as in keystoneauth's
    ``register_*_conf_options``; pass the same names to the readers
    (:meth:`Settings.from_conf`,
    :meth:`~volume_image.clients.glance.GlanceClient.from_conf`).

    :param conf: the configuration object to register on.
    :param group: our own options (``[volume_image]``).
    :param glance_group: how to reach Glance (``[glance]``).
    :param copy_group: co-location's copy credentials
        (``[volume_image_copy]``).
    """
    conf.register_opts(_opts, group=group)
    _register_shared(conf, _glance_registration_opts(), glance_group)
    # auth_type and auth_section; the plugin's own options are registered
    # by keystoneauth when it is loaded
    _register_shared(
        conf, ks_loading.get_auth_common_conf_options(), copy_group
    )


def register_adapter_opts(
    conf: cfg.ConfigOpts, glance_group: str = GLANCE_GROUP
) -> None:
    """Register keystoneauth's adapter options in ``glance_group``, each
    one the host has not declared itself (Cinder's ``region_name``).
    Called by the loaders, so after the host's imports.
    """
    _register_shared(conf, _adapter_opts(), glance_group)


def loader_defaults(
    conf: cfg.ConfigOpts, glance_group: str = GLANCE_GROUP
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our values for the Glance group's options the operator left unset:
    keyword arguments for keystoneauth's session loader and for its
    adapter loader (given, they win over the group's values, so only the
    unset ones are given).  A request to Glance must not hang a worker
    forever, keystoneauth's default.

    :returns: ``(session_kwargs, adapter_kwargs)``.
    """
    register_adapter_opts(conf, glance_group)
    values: Any = conf[glance_group]
    unset = {k: v for k, v in _GLANCE_DEFAULTS.items() if values[k] is None}
    session = {k: v for k, v in unset.items() if k == "timeout"}
    adapter = {k: v for k, v in unset.items() if k != "timeout"}
    return session, adapter


def load(files: Sequence[str]) -> cfg.ConfigOpts:
    """A new ``ConfigOpts`` with our options, read from ``files`` only:
    never from the process's command line (an API server's, say).

    :raises oslo_config.cfg.ConfigFilesNotFoundError: a file is missing.
    """
    conf = cfg.ConfigOpts()
    register_opts(conf)
    # our own ConfigOpts: no host to declare them later
    register_adapter_opts(conf)
    conf(args=[], project="volume_image", default_config_files=list(files))
    return conf


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Return the options for ``oslo-config-generator``.

    :returns: ``(group, options)`` pairs, the real option objects.
    """
    return [
        (GLANCE_GROUP, _glance_opts()),
        (GROUP, list(_opts)),
        (COPY_GROUP, _copy_opts()),
    ]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``[volume_image]`` options as one frozen value.

    The library works from this object, so it can be built without
    oslo.config (``Settings()`` gives the defaults) and cannot change
    under a running upload.
    """

    store_cache_ttl: float = 60.0
    use_store_detail: bool = True
    upload_retries: int = 3
    upload_retry_delay: float = 1.0
    upload_read_timeout: float = 300.0
    chunk_size: int = 1024 * 1024
    verify_upload: bool = True
    hash_algo: str = "sha512"
    conversion_dir: str = dataclasses.field(
        default_factory=tempfile.gettempdir
    )
    compress_on_upload: bool = True
    introspection_cpu_limit: int = 60
    introspection_address_space_limit: int = 1
    max_concurrent_uploads: int = 4
    max_response_bytes: int = 16 * 1024 * 1024
    answer_deadline: float = 120.0
    operation_deadline: float = 300.0
    api_timeout: float = 5.0
    fail_open: bool = False
    colocate_with_base_image: bool = False
    colocate_strict: bool = False
    colocate_timeout: float = DEFAULT_COLOCATE_TIMEOUT
    rbd_direct_upload: bool = True
    rbd_direct_flatten: str = "mgr"
    rbd_direct_timeout: float = 600.0

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, group: str = GROUP) -> Settings:
        """Build the settings from a ``ConfigOpts`` with our options.

        :param conf: a configuration on which :func:`register_opts` ran.
        :param group: the group given to :func:`register_opts`.
        """
        ours: Any = conf[group]
        values = {f.name: ours[f.name] for f in dataclasses.fields(cls)}
        if values["conversion_dir"] is None:
            values["conversion_dir"] = tempfile.gettempdir()
        return cls(**values)

    @property
    def qemu_img_limits(self) -> dict[str, int]:
        """The process limits of ``qemu-img info`` (oslo.concurrency's
        ``ProcessLimits`` arguments).
        """
        return {
            "cpu_time": self.introspection_cpu_limit,
            "address_space": self.introspection_address_space_limit * 1024**3,
        }


def set_by_operator(
    conf: cfg.ConfigOpts, name: str, group: str = GROUP
) -> bool:
    """Whether option ``name`` of ``group`` was set in a file, on the
    command line or in the environment, not left at its default: where
    a host has an option of its own for the same thing, ours then wins.
    """
    where = conf.get_location(name, group)
    return where is not None and where.location not in (
        cfg.Locations.opt_default,
        cfg.Locations.set_default,
    )
