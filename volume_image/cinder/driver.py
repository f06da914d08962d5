"""Cinder's upload-to-image through ``volume_image``, switched on in
``cinder.conf`` alone::

    [file-1]
    volume_driver = volume_image.cinder.driver.StoreAwareDriver
    volume_image_wrapped_driver = cinder.volume.drivers.lvm.LVMVolumeDriver

How it works:

* ``StoreAwareDriver(...)`` returns an instance of a subclass of the
  wrapped driver (``StoreAware<Name>``), made once per wrapped class.
  Everything the wrapped driver does is inherited untouched: it *is* that
  driver, to ``isinstance`` and to the volume manager.
* The subclass changes one thing.  Drivers upload through Cinder's seam
  ``cinder.volume.volume_utils.upload_volume`` (the base driver, LVM, RBD,
  the NFS family and others).  When the first such backend starts, the seam
  is replaced in the service process by a dispatcher: a call for a volume
  of a backend of ours (``volume.host``) goes through
  :class:`~volume_image.pipeline.uploader.Uploader`; any other call goes to
  Cinder's own function, unchanged.  A driver that overrides
  ``copy_volume_to_image`` but still calls the seam is covered too.
* The upload uses the Glance the service already uses: the endpoints of
  ``[DEFAULT] glance_api_servers`` (or the catalog, by
  ``glance_catalog_info``), ``glance_request_timeout``,
  ``glance_num_retries``, the CA and TLS options, and the caller's token
  from the request context plus the service token when
  ``[service_user] send_service_user_token`` is set: Cinder's own
  ``service_auth.get_auth_plugin``.
* Co-location with the base image (``[volume_image]
  colocate_with_base_image``): the base image is the volume's glance
  metadata ``image_id`` (what Cinder sends as
  ``x-openstack-base-image-ref``).  Glance's copy-image is admin-only by
  default, so its requests use the credentials of ``[volume_image_copy]``
  when that group sets an ``auth_type``, else the caller's.
* Our own options live in ``[volume_image]`` and ``[volume_image_copy]``
  (see :mod:`volume_image.config`), groups Cinder does not have.  Where
  Cinder has an option for the same thing (:data:`CINDER_OPTIONS`:
  ``image_conversion_dir``, ``image_compress_on_upload``, the
  introspection limits), Cinder's decides, unless the operator set ours.

Under eventlet, nothing here holds the event loop: reads and hashing run
in native threads (:mod:`volume_image.offload`), gzip too, qemu-img is
polled with green sleeps, and Glance is spoken to through green sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from cinder import exception
from cinder.image import glance as cinder_glance
from cinder.image import image_utils
from cinder.volume import volume_utils
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import session as ks_session
from keystoneauth1.loading import session as ks_session_loading
from oslo_config import cfg
from oslo_utils import importutils

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import placement
from volume_image.core.validation import StoreCatalogCache
from volume_image.pipeline import convert
from volume_image.pipeline.uploader import (
    ImageMeta,
    Source,
    Uploader,
    UploadResult,
)

__all__ = ["StoreAwareDriver", "driver_opts"]

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

driver_opts = [
    cfg.StrOpt(
        "volume_image_wrapped_driver",
        help="The volume driver this backend really runs, e.g. "
        "cinder.volume.drivers.lvm.LVMVolumeDriver, when volume_driver is "
        "volume_image.cinder.driver.StoreAwareDriver. Everything but the "
        "upload to an image is left to it.",
    ),
]

# Glance's disk_format names where qemu-img's differ
_QEMU_NAMES = {"vhd": "vpc"}

#: ``[volume_image]`` option -> Cinder's ``[DEFAULT]`` option that decides
#: inside cinder-volume, unless the operator set ours
CINDER_OPTIONS = {
    "conversion_dir": "image_conversion_dir",
    "compress_on_upload": "image_compress_on_upload",
    "introspection_cpu_limit": "image_introspection_cpu_limit",
    "introspection_address_space_limit": (
        "image_introspection_address_space_limit"
    ),
}

# backend host ("host@backend") -> our driver serving it
_BACKENDS: dict[str, Any] = {}
_SEAM_LOCK = threading.Lock()
_CLASSES: dict[type, type] = {}

# the Glance client of the upload running in this green thread: the store
# catalog is shared by the process, but fetched with the caller's token
_CALLER: ContextVar[glance.GlanceClient] = ContextVar("volume_image_caller")
_CACHES: dict[str, StoreCatalogCache] = {}


class StoreAwareDriver:
    """A ``volume_driver`` that runs ``volume_image_wrapped_driver`` with
    uploads to images through ``volume_image``.

    Instantiating it returns the wrapped driver's ``StoreAware`` subclass;
    see the module docstring.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        configuration = kwargs.get("configuration")
        if configuration is None:
            raise exception.InvalidConfigurationValue(
                option="volume_driver", value=cls.__name__
            )
        configuration.append_config_values(driver_opts)
        path = configuration.safe_get("volume_image_wrapped_driver")
        if not path:
            raise exception.InvalidConfigurationValue(
                option="volume_image_wrapped_driver", value=path
            )
        wrapped = importutils.import_class(path)
        return store_aware(wrapped)(*args, **kwargs)


def store_aware(wrapped: type) -> type:
    """The ``StoreAware`` subclass of a volume driver class (made once)."""
    with _SEAM_LOCK:
        if wrapped not in _CLASSES:
            _CLASSES[wrapped] = type(
                f"StoreAware{wrapped.__name__}",
                (_StoreAwareMixin, wrapped),
                {"__module__": __name__},
            )
        return _CLASSES[wrapped]


class _StoreAwareMixin:
    """What ``StoreAware<Driver>`` adds to the wrapped driver."""

    host: str
    configuration: Any

    def do_setup(self, context: Any) -> None:
        super().do_setup(context)  # type: ignore[misc]
        config.register_opts(CONF)
        settings = _settings()
        # a killed upload's temporary files would otherwise stay for good
        convert.sweep_stale_workdirs(settings.conversion_dir)
        _install_seam()
        _BACKENDS[self.host] = self
        if _is_rbd(self):
            from volume_image.cinder import rbd_direct

            # a cinder-volume killed mid fast path left Ceph objects
            rbd_direct.recover(self, _journal_dir(self))
            _learn_stores(context)
        LOG.info(
            "volume_image: uploads to images of backend %s go through "
            "volume_image (wrapping %s); conversions in %s, qcow2 "
            "compressed %s, qemu-img info limits %d s CPU and %d GiB",
            self.host,
            type(self).__mro__[2].__name__,
            settings.conversion_dir,
            settings.compress_on_upload,
            settings.introspection_cpu_limit,
            settings.introspection_address_space_limit,
        )
        if self.configuration.safe_get("image_upload_use_cinder_backend"):
            LOG.warning(
                "volume_image: backend %s sets "
                "image_upload_use_cinder_backend: Cinder's volume manager "
                "registers a raw/bare upload as a cinder:// location of a "
                "cloned volume before any driver runs, so those uploads "
                "do not go through volume_image (no store check, no "
                "verification); any other upload, or one whose clone "
                "fails, does",
                self.host,
            )

    def copy_volume_to_image(
        self, context: Any, volume: Any, image_service: Any, image_meta: Any
    ) -> None:
        """An RBD volume into an rbd store of its own cluster: inside Ceph
        (:mod:`volume_image.cinder.rbd_direct`); anything else streams
        through the wrapped driver and the seam, as before.
        """
        if _is_rbd(self) and _direct(self, context, volume, image_meta):
            return
        super().copy_volume_to_image(  # type: ignore[misc]
            context, volume, image_service, image_meta
        )

    def volume_image_upload(
        self,
        context: Any,
        image_meta: dict[str, Any],
        volume_path: str | None,
        volume: Any,
        *,
        volume_fd: Any = None,
        volume_format: str = "raw",
        compress: bool = True,
    ) -> UploadResult:
        """Upload one volume into the image Cinder's API created.

        :param compress: the calling driver's ``compress`` argument of
            ``upload_volume``: False turns compression off for this
            upload, as upstream.

        :raises cinder.exception.ImageUnacceptable: our error, with our
            message as the reason.
        """
        image_id = image_meta["id"]
        disk_format = image_meta.get("disk_format") or "raw"
        image_utils.check_image_conversion_disable(
            disk_format, volume_format, image_id, upload=True
        )
        settings = _settings(compress)
        client = _glance_client(context, settings)
        base_image_ref, unusable = placement.base_image_of(
            volume.glance_metadata
        )
        if unusable:
            # the owner of the image the volume came from set it: upload,
            # without co-location, rather than fail
            LOG.warning("volume_image: volume %s: %s", volume.id, unusable)
        try:
            # only an upload that may be copied needs the copy credentials
            copy_client = (
                _copy_client(client, settings) if base_image_ref else None
            )
        except errors.VolumeImageError as exc:
            raise _unacceptable(
                image_id,
                exc,
                f"[{config.COPY_GROUP}] cannot be used for "
                f"the copies of image {image_id}",
            ) from exc
        uploader = Uploader(
            client,
            settings,
            cache=_catalog_cache(client, settings),
            copy_client=copy_client,
        )
        vtype = getattr(volume, "volume_type", None)
        extra_specs = dict(getattr(vtype, "extra_specs", None) or {})
        meta = ImageMeta(
            name=image_meta.get("name") or "",
            disk_format=disk_format,
            container_format=image_meta.get("container_format") or "bare",
        )
        if volume_fd is not None:
            source = Source(fileobj=volume_fd, size=int(volume.size) * 1024**3)
        elif volume_path is not None:
            source = Source(volume_path)
        else:  # Cinder's seam always passes one of them
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason="the driver gave neither a volume path nor a file",
            )
        LOG.info(
            "volume_image: uploading volume %s to image %s (%s/%s, base "
            "image %s)",
            volume.id,
            image_id,
            disk_format,
            meta.container_format,
            base_image_ref,
        )
        token = _CALLER.set(client)
        try:
            with _readable(volume_path):
                result = uploader.upload(
                    source,
                    meta,
                    extra_specs=extra_specs,
                    image_id=image_id,
                    source_format=_QEMU_NAMES.get(
                        volume_format, volume_format
                    ),
                    base_image_ref=base_image_ref,
                )
        except errors.VolumeImageError as exc:
            # Glance 33 answers an rbd store whose cluster it cannot reach
            # with 410 "Adding images to store is disabled": name the
            # cluster, whatever the error says
            hint = _where_it_went(context, settings, extra_specs)
            if hint:
                exc.hints.append(hint)
            raise _unacceptable(
                image_id,
                exc,
                f"upload of volume {volume.id} to image {image_id} failed",
            ) from exc
        finally:
            _CALLER.reset(token)
        LOG.info(
            "volume_image: volume %s uploaded to image %s in store %s "
            "(%d bytes, %.1fs, verified %s)",
            volume.id,
            image_id,
            result.store,
            result.size,
            result.seconds,
            result.verified,
        )
        if result.colocation is not None:
            placed = result.colocation
            log = LOG.info if placed.complete else LOG.warning
            log(
                "volume_image: image %s, co-location with base image %s: "
                "%s (%s)",
                image_id,
                placed.base_image,
                placed.summary(),
                "; ".join(
                    f"{c.store}: {c.reason}" for c in placed.copies if c.reason
                )
                or placed.reason,
            )
        return result


def _where_it_went(
    context: Any, settings: config.Settings, specs: dict[str, str]
) -> str:
    """For a failed upload into an rbd store: which Ceph cluster and pool
    the store writes to (an unreachable cluster looks to the caller like
    any Glance failure).  Empty when unknown: this is a hint, and asking
    for it must not hide the failure.
    """
    from cinder import service_auth

    from volume_image.core import specs as spec_rules

    try:
        service = service_auth.get_service_auth_plugin()
        if service is None:
            return ""
        catalog = _store_detail(context, settings, service)
    except Exception as exc:  # a hint only: the upload's error stands
        LOG.debug("volume_image: no store detail for the hint: %s", exc)
        return ""
    store_id = spec_rules.split_extra_specs(specs).store_id
    store = catalog.get(store_id) if store_id else catalog.default
    if store is None or store.type != "rbd":
        return ""
    if not store.fsid:
        return (
            f"Store {store.id} is an rbd store whose Ceph cluster Glance "
            "cannot describe now: check that Glance reaches it."
        )
    return (
        f"Store {store.id} writes to pool {store.pool} of Ceph cluster "
        f"{store.fsid}: check that Glance reaches that cluster."
    )


def _learn_stores(context: Any) -> None:
    """Read the stores' detail once at start, so that a failure into an
    rbd store names its cluster even when Glance can no longer describe
    it.  Skipped quietly when it cannot be read now.
    """
    from cinder import service_auth

    try:
        service = service_auth.get_service_auth_plugin()
        if service is not None:
            _store_detail(context, _settings(), service)
    except Exception as exc:  # only a head start for a hint
        LOG.debug("volume_image: store detail not read at start: %s", exc)


#: Glance endpoint -> the last store detail that named each rbd store's
#: cluster: Glance 33 stops describing an rbd store whose cluster it
#: cannot reach, which is when its cluster matters most
_KNOWN_DETAIL: dict[str, dict[str, Any]] = {}


def _store_detail(
    context: Any, settings: config.Settings, service: Any
) -> Any:
    """The store catalog as the service user sees it, each rbd store's
    fsid and pool filled from the last answer that had them.
    """
    client = _glance_client(
        context, settings, auth=service, use_store_detail=True
    )
    catalog = client.get_store_catalog()
    known = _KNOWN_DETAIL.setdefault(client.endpoint or "", {})
    stores = []
    for store in catalog.stores:
        if store.fsid:
            known[store.id] = store
        elif store.type == "rbd" and store.id in known:
            old = known[store.id]
            store = dataclasses.replace(store, fsid=old.fsid, pool=old.pool)
        stores.append(store)
    return dataclasses.replace(catalog, stores=tuple(stores))


def _journal_dir(driver: Any) -> Path:
    """Where this backend journals its unfinished fast-path uploads."""
    return Path(
        str(CONF.state_path), "volume_image", "rbd-direct", driver.host
    )


def _is_rbd(driver: Any) -> bool:
    """Whether the wrapped driver is Cinder's RBDDriver (or a subclass)."""
    try:
        from cinder.volume.drivers import rbd as cinder_rbd
    except ImportError:  # no rados bindings: not an RBD backend anyway
        return False
    return isinstance(driver, cinder_rbd.RBDDriver)


def _direct(driver: Any, context: Any, volume: Any, image_meta: Any) -> bool:
    """Try the same-cluster fast path; False when the upload must stream
    (the log says why).

    :raises cinder.exception.ImageUnacceptable: the fast path applied and
        failed; nothing is left in Ceph.
    """
    from cinder import service_auth

    from volume_image.cinder import rbd_direct

    image_id = image_meta["id"]
    settings = _settings()
    vtype = getattr(volume, "volume_type", None)
    specs = dict(getattr(vtype, "extra_specs", None) or {})
    try:
        decision = _decide(
            driver, context, settings, specs, image_meta, volume, service_auth
        )
    except errors.VolumeImageError as exc:
        raise _unacceptable(
            image_id, exc, f"upload of volume {volume.id} to image {image_id}"
        ) from exc
    if not decision.direct:
        LOG.info(
            "volume_image: volume %s to image %s streams: %s",
            volume.id,
            image_id,
            decision.reason,
        )
        return False
    client = _glance_client(context, settings)
    started = time.monotonic()
    try:
        result = rbd_direct.upload(
            driver,
            volume,
            image_id,
            decision,
            client,
            settings,
            journal_dir=_journal_dir(driver),
        )
    except rbd_direct.Fallback as exc:
        LOG.warning(
            "volume_image: volume %s to image %s streams: %s",
            volume.id,
            image_id,
            exc,
        )
        return False
    except errors.VolumeImageError as exc:
        raise _unacceptable(
            image_id, exc, f"upload of volume {volume.id} to image {image_id}"
        ) from exc
    LOG.info(
        "volume_image: volume %s became image %s in store %s inside Ceph "
        "(cluster %s, flatten by %s, %.1fs: Ceph %.1fs, Glance's location "
        "%.1fs; %d bytes; Glance computes its checksum)",
        volume.id,
        image_id,
        decision.store,
        decision.fsid,
        result["volume_image_flatten"],
        time.monotonic() - started,
        *result["volume_image_seconds"],
        int(result.get("size") or 0),
    )
    return True


def _decide(
    driver: Any,
    context: Any,
    settings: config.Settings,
    specs: dict[str, str],
    image_meta: Any,
    volume: Any,
    service_auth: Any,
) -> Any:
    """The fast path's decision, from the store catalog as the service
    user sees it (``/stores/detail`` names each rbd store's fsid and pool
    and needs the service or admin role; the caller may have neither).
    """
    from volume_image.core import direct
    from volume_image.core import specs as spec_rules

    service = service_auth.get_service_auth_plugin()
    disk_format = image_meta.get("disk_format") or "raw"
    container_format = image_meta.get("container_format") or "bare"
    # what needs no request first: most uploads that stream stop here
    if (
        not settings.rbd_direct_upload
        or service is None
        or disk_format != "raw"
        or container_format == "compressed"
    ):
        return direct.decide(
            enabled=settings.rbd_direct_upload,
            disk_format=disk_format,
            container_format=container_format,
            store=None,
            detailed=False,
            volume_fsid="",
            service_token=service is not None,
        )
    catalog = _store_detail(context, settings, service)
    split = spec_rules.split_extra_specs(specs)
    store_id = split.store_id
    store = catalog.get(store_id) if store_id else catalog.default
    base_image = (volume.glance_metadata or {}).get("image_id")
    return direct.decide(
        enabled=True,
        disk_format=disk_format,
        container_format=container_format,
        store=store,
        detailed=catalog.detailed,
        volume_fsid=str(driver._get_fsid()),
        service_token=True,
        colocating=bool(
            settings.colocate_with_base_image and base_image and not store_id
        ),
    )


@contextlib.contextmanager
def _readable(path: str | None) -> Iterator[None]:
    """Make a root-owned device readable for the upload, as Cinder does
    (``chown_if_needed``: a temporary chown through its root helper).
    """
    if path is None or os.access(path, os.R_OK):
        yield
        return
    with image_utils.chown_if_needed(path):
        yield


def _install_seam() -> None:
    """Replace ``volume_utils.upload_volume`` by the dispatcher, once."""
    with _SEAM_LOCK:
        current = volume_utils.upload_volume
        if getattr(current, "_volume_image_original", None) is not None:
            return
        original = current

        @functools.wraps(original)
        def upload_volume(
            context: Any,
            image_service: Any,
            image_meta: dict[str, Any],
            volume_path: str | None,
            volume: Any,
            volume_format: str = "raw",
            run_as_root: bool = True,
            compress: bool = True,
            volume_fd: Any = None,
        ) -> None:
            ours = _BACKENDS.get(
                volume_utils.extract_host(volume.host, "backend")
            )
            if ours is None:
                return original(  # type: ignore[no-any-return]
                    context,
                    image_service,
                    image_meta,
                    volume_path,
                    volume,
                    volume_format=volume_format,
                    run_as_root=run_as_root,
                    compress=compress,
                    volume_fd=volume_fd,
                )
            ours.volume_image_upload(
                context,
                image_meta,
                volume_path,
                volume,
                volume_fd=volume_fd,
                volume_format=volume_format,
                compress=compress,
            )
            return None

        upload_volume._volume_image_original = original  # type: ignore[attr-defined]
        volume_utils.upload_volume = upload_volume


def _settings(compress: bool = True) -> config.Settings:
    """``[volume_image]``, where Cinder's options of the same purpose
    (:data:`CINDER_OPTIONS`) replace ours the operator did not set.
    """
    settings = config.Settings.from_conf(CONF)
    values = {
        ours: CONF[cinders]
        for ours, cinders in CINDER_OPTIONS.items()
        if not config.set_by_operator(CONF, ours)
    }
    if "conversion_dir" in values:
        # $state_path/conversion by default; made if missing, the system
        # temporary directory if unset, as Cinder does
        values["conversion_dir"] = volume_utils.image_conversion_dir()
    if not compress:
        values["compress_on_upload"] = False
    return dataclasses.replace(settings, **values)


_SESSION: ks_session.Session | None = None


def _session() -> ks_session.Session:
    """One transport session for the process, from Cinder's Glance TLS and
    timeout options (as Cinder builds its own).
    """
    global _SESSION
    if _SESSION is None:
        _SESSION = ks_session_loading.Session().load_from_options(
            insecure=CONF.glance_api_insecure,
            cacert=CONF.glance_ca_certificates_file,
            timeout=CONF.glance_request_timeout or config.DEFAULT_TIMEOUT,
            cert=CONF.glance_certfile,
            key=CONF.glance_keyfile,
            split_loggers=CONF.split_loggers,
        )
    return _SESSION


def _glance_endpoint(context: Any) -> str:
    """The next Glance API server, as Cinder picks it."""
    netloc, use_ssl = next(iter(cinder_glance.get_api_servers(context)))
    return f"{'https' if use_ssl else 'http'}://{netloc}"


def _glance_client(
    context: Any,
    settings: config.Settings,
    *,
    auth: Any = None,
    use_store_detail: bool | None = None,
) -> glance.GlanceClient:
    """A client for this request on Cinder's Glance endpoint: the caller's
    token (plus the service token when Cinder sends one), or ``auth``
    (the service user alone, whom ``/v2/info/stores/detail`` admits).
    """
    from cinder import service_auth

    adapter = ks_adapter.Adapter(
        _session(),
        auth=auth or service_auth.get_auth_plugin(context),
        service_type="image",
        endpoint_override=_glance_endpoint(context),
        connect_retries=CONF.glance_num_retries,
        global_request_id=getattr(context, "global_id", None),
    )
    return glance.GlanceClient(
        adapter,
        use_store_detail=(
            settings.use_store_detail
            if use_store_detail is None
            else use_store_detail
        ),
        max_response_bytes=settings.max_response_bytes,
        answer_deadline=settings.answer_deadline,
    )


def _unacceptable(
    image_id: str, exc: errors.VolumeImageError, what: str
) -> Exception:
    """Log ``exc`` with its details (endpoint, request id) and return
    Cinder's error for it, whose reason may reach the user: our message
    without Glance's endpoint.
    """
    LOG.error("volume_image: %s: %s", what, exc.details())
    return exception.ImageUnacceptable(  # type: ignore[no-any-return]
        image_id=image_id, reason=str(exc)
    )


def _copy_client(
    client: glance.GlanceClient, settings: config.Settings
) -> glance.GlanceClient | None:
    """The client for co-location's copies: ``[volume_image_copy]``'s
    credentials on the same Glance, or None (the caller's client).
    """
    if not settings.colocate_with_base_image:
        return None
    return client.with_auth_from_conf(CONF, config.COPY_GROUP)


def _catalog_cache(
    client: glance.GlanceClient, settings: config.Settings
) -> StoreCatalogCache:
    """The process's catalog cache for ``client``'s Glance."""
    endpoint = client.endpoint or ""
    with _SEAM_LOCK:
        if endpoint not in _CACHES:
            _CACHES[endpoint] = StoreCatalogCache(
                lambda: _CALLER.get().get_store_catalog(),
                ttl=settings.store_cache_ttl,
            )
        return _CACHES[endpoint]
