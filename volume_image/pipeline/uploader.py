"""The upload pipeline: a volume becomes a Glance image in the right store.

::

    resolve the store (spec, cached catalog) -> convert/compress if asked
    -> create the image (unless given) -> PUT the metered stream
    -> verify what Glance reports -> UploadResult
    on failure: retry what is provably retriable from byte 0, else clean up

Nothing is created for a store already known to be invalid.  A retry never
resends a half-read stream: it waits until Glance has put the image back
to ``queued`` and reopens the source at byte 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import deadline, placement, specs, stores, sweep
from volume_image.core.validation import StoreCatalogCache, Validator
from volume_image.pipeline import colocate, convert, offload, records
from volume_image.pipeline.stream import (
    MeteredBody,
    ProgressCallback,
    Source,
    digest_of,
)

__all__ = [
    "TAGS",
    "ImageMeta",
    "Source",
    "UploadResult",
    "Uploader",
]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_DELAY_CAP = 30.0
# Glance restores an image to queued within ~0.2 s of a read error
_QUEUED_WAIT = 15.0
_CLEANUP_STATES = ("queued", "saving")
# how many answers of Glance are asked before a store is called gone
_STORE_ASKS = 3
# waits between tries of an idempotent call (GET or DELETE of the image)
# while Glance cannot be reached or answers 5xx; None: give up.  About 8 s
# in all: a Glance node restarting, or a worker's "database is locked"
_IDEMPOTENT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, None)


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What the new image is called and how its data is packaged.

    :ivar properties: further image fields and properties, sent as given
        to ``POST /v2/images``.
    """

    name: str
    disk_format: str = "raw"
    container_format: str = "bare"
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The ``POST /v2/images`` body."""
        return {
            **self.properties,
            "name": self.name,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
        }


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What an upload produced, as Glance confirmed it."""

    image_id: str
    store: str | None
    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    seconds: float
    attempts: int
    verified: bool
    #: images created for this upload: more than 1 when Glance left one
    #: stuck (its node died) and we replaced it with a new one
    images: int = 1
    #: why the image was kept without verification (Glance could not be
    #: asked afterwards), or None
    unverified_reason: str | None = None
    #: co-location with the base image: where the image went and each
    #: copy's outcome; None when co-location was not asked for
    colocation: placement.Colocation | None = None

    @property
    def throughput(self) -> float:
        """Bytes per second of the upload (copies not counted)."""
        return self.size / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        doc = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "colocation"
        }
        doc["colocation"] = (
            self.colocation.as_dict() if self.colocation else None
        )
        return doc


@dataclasses.dataclass
class _Job:
    """One :meth:`Uploader.upload` call, as its steps hand it on.

    ``header_store`` and ``target`` are decided before the upload (by
    the volume type, or by co-location), ``meta`` once a caller's image
    has been read.
    """

    src: Source
    meta: ImageMeta | None
    #: a caller's ``queued`` image to fill; None: we create one
    image_id: str | None
    source_format: str
    base_image_ref: str | None
    progress: ProgressCallback | None
    cancel: threading.Event | None
    #: when the call started (for the result's seconds)
    t0: float
    #: the store named in the PUT; None: Glance's default
    header_store: str | None = None
    #: the store expected to hold the image; None: no multi-store
    target: stores.StoreInfo | None = None


@dataclasses.dataclass
class _Target:
    """The image an upload is filling; it changes when a stuck image of
    ours is replaced.
    """

    image_id: str
    created: bool
    images: int = 1


#: image properties an upload sets: shown by ``volume-image sweep``, which
#: trusts none of them alone (see :mod:`volume_image.core.sweep`)
TAGS = (sweep.HOST_TAG, sweep.PID_TAG, sweep.MARK)


def _tags(image_id: str) -> dict[str, str]:
    return {
        sweep.HOST_TAG: socket.gethostname(),
        sweep.PID_TAG: str(os.getpid()),
        sweep.MARK: image_id,
    }


#: Glance endpoint -> the digest its images carry, learnt from an upload
#: whose algorithm differed, so the next upload hashes the right one once
_GLANCE_ALGO: dict[str, str] = {}


class _Slots:
    """The process's one cap on concurrent uploads (``[volume_image]
    max_concurrent_uploads``), shared by every :class:`Uploader`; the
    latest limit set wins (in one service they come from one config).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.limit = 4
        self.in_use = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold one slot; waiting for it is not waiting on Glance, so it
        does not count against the deadline.
        """
        with deadline.paused(), self._cond:
            self._cond.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= 1
                self._cond.notify_all()


_SLOTS = _Slots()


def _is_retriable(exc: errors.VolumeImageError) -> bool:
    # connection refused/reset/cut (no status) or 503; never a 500, which
    # Glance also answers for data it could not read; never a timeout:
    # a Glance that stopped reading for upload_read_timeout would only
    # cost that long again
    return (
        isinstance(exc, errors.GlanceUnavailable)
        and not exc.timed_out
        and exc.status_code in (None, 503)
    )


def _idempotent(call: Callable[..., T], *args: str) -> T:
    """``call(*args)`` for a GET or DELETE, tried again after
    :data:`_IDEMPOTENT_DELAYS` while Glance refuses connections or answers
    5xx (repeating either changes nothing), then the last error.  A
    timeout is not tried again: a Glance that hangs would cost the whole
    timeout once more each time.
    """
    for delay in _IDEMPOTENT_DELAYS:
        try:
            return call(*args)
        except errors.GlanceUnavailable as exc:
            if delay is None or exc.timed_out:
                raise
            delay = _waited(delay, exc)
            if _past(delay):
                raise
            LOG.debug("Glance unavailable (%s); again in %.1fs", exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _waited(delay: float, exc: errors.VolumeImageError) -> float:
    """``delay``, or longer when Glance's 503 asked for it (Retry-After),
    at most :data:`_RETRY_DELAY_CAP`.
    """
    if not isinstance(exc, errors.GlanceUnavailable):
        return delay
    if exc.retry_after is None:
        return delay
    return min(max(delay, exc.retry_after), _RETRY_DELAY_CAP)


def _past(delay: float) -> bool:
    """Whether sleeping ``delay`` seconds would pass the deadline."""
    left = deadline.remaining()
    return left is not None and left < delay


def _pause(seconds: float, cancel: threading.Event | None) -> None:
    """Sleep, but wake up and raise when the upload is cancelled; raise
    at once when the sleep would pass the operation's deadline.
    """
    if _past(seconds):
        exc = errors.GlanceUnavailable(
            "Glance is unavailable: the upload gave up, as waiting "
            f"{seconds:.1f} s more would pass its deadline ([volume_image] "
            "operation_deadline)"
        )
        exc.timed_out = True
        raise exc
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise errors.UploadCancelled("upload cancelled")


class Uploader:
    """Uploads volumes to Glance; thread-safe, one per process is enough.

    :param client: the Glance client.
    :param settings: the ``[volume_image]`` settings.
    :param cache: a catalog cache to share with validators; one is made
        from ``client`` when not given.
    :param copy_client: the client for co-location's ``copy-image``
        requests (credentials of ``[volume_image_copy]``); ``client``
        when not given.
    """

    def __init__(
        self,
        client: glance.GlanceClient,
        settings: config.Settings | None = None,
        *,
        cache: StoreCatalogCache | None = None,
        copy_client: glance.GlanceClient | None = None,
    ) -> None:
        self.client = client
        self.copy_client = copy_client or client
        self.settings = settings or config.Settings()
        self.cache = cache or StoreCatalogCache(
            lambda: _idempotent(client.get_store_catalog),
            ttl=self.settings.store_cache_ttl,
        )
        # an unknown store is asked about again before the spec is called
        # wrong: the Glance nodes behind a load balancer may disagree
        self.validator = Validator(
            self.cache, asks=_STORE_ASKS, refresh_after=0.0
        )
        _SLOTS.limit = self.settings.max_concurrent_uploads

    def remove_stale_workdirs(self) -> list[Path]:
        """Remove the work directories that processes which are gone left
        in ``conversion_dir`` (a killed upload's temporary files would
        otherwise stay for good).  Call it once when a service starts.

        :returns: the directories removed.
        """
        return convert.sweep_stale_workdirs(self.settings.conversion_dir)

    def resolve_store(
        self,
        *,
        extra_specs: Mapping[str, Any] | None = None,
        store_id: str | None = None,
    ) -> tuple[str | None, stores.StoreInfo | None]:
        """Decide where an upload goes, from the cached catalog.

        :returns: (the store to name in the request or None for the
            default, the store expected to hold the image or None when
            Glance has no multi-store).
        :raises SpecError: the named store is invalid.
        :raises GlanceError: the catalog could not be had.
        """
        if extra_specs is not None and store_id is not None:
            raise ValueError("give extra_specs or store_id, not both")
        key = specs.STORE_ID_KEY
        if extra_specs is not None:
            split = self.validator.validate_extra_specs(extra_specs)
            if split.has_store_id:
                key = split.original_keys[specs.STORE_ID_KEY]
                store_id = split.store_id
        if store_id is not None:
            # a warm cache: no second request for what was just checked
            return store_id, self.validator.check_store(store_id, key)
        return None, self.cache.get().default

    def upload(
        self,
        source: Source | str | os.PathLike[str],
        meta: ImageMeta | None = None,
        *,
        extra_specs: Mapping[str, Any] | None = None,
        store_id: str | None = None,
        image_id: str | None = None,
        source_format: str = "raw",
        base_image_ref: str | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        colocate: bool | None = None,
    ) -> UploadResult:
        """Upload a volume and return what Glance confirmed.

        :param source: the volume: a :class:`Source` or a path.
        :param meta: the image's name and formats; may be omitted with
            ``image_id``, whose own formats are then used.
        :param extra_specs: the volume type's extra specs, whose
            ``image_service:store_id`` names the store.
        :param store_id: an explicit store instead of ``extra_specs``.
        :param image_id: an existing ``queued`` image to fill (Cinder's API
            creates it before the volume service uploads).
        :param source_format: the volume's own format, for qemu-img
            (its names: ``vpc`` for VHD).  A source that is not raw is
            inspected before qemu-img reads it.
        :param base_image_ref: the image the volume was created from,
            sent to Glance as ``x-openstack-base-image-ref``, and the
            image to co-locate with.
        :param progress: called with (bytes done, bytes total).
        :param cancel: set from another thread to cancel and clean up.
        :param colocate: put the image in every writable store of
            ``base_image_ref`` when no store is named (see
            :mod:`volume_image.colocation`); default ``[volume_image]
            colocate_with_base_image``.
        :raises SpecError: the store is invalid; nothing was created.
        :raises GlanceError: Glance could not be asked or refused us.
        :raises UploadError: the upload failed and was cleaned up;
            :class:`~volume_image.errors.UnsafeSource` before anything
            was sent; :class:`~volume_image.errors.ColocationError` in
            strict co-location.
        """
        for name, ref in (
            ("image_id", image_id),
            ("base_image_ref", base_image_ref),
        ):
            if ref is not None and not placement.is_image_ref(ref):
                raise ValueError(
                    f"{name} {ascii(ref)[:80]} is not an image id"
                )
        job = _Job(
            src=source if isinstance(source, Source) else Source(source),
            meta=meta,
            image_id=image_id,
            source_format=source_format,
            base_image_ref=base_image_ref,
            progress=progress,
            cancel=cancel,
            t0=time.monotonic(),
        )
        if colocate is None:
            colocate = self.settings.colocate_with_base_image
        with deadline.within(self.settings.operation_deadline):
            return self._run(job, extra_specs, store_id, colocate)

    def _run(
        self,
        job: _Job,
        extra_specs: Mapping[str, Any] | None,
        store_id: str | None,
        colocate: bool,
    ) -> UploadResult:
        job.header_store, job.target = self.resolve_store(
            extra_specs=extra_specs, store_id=store_id
        )
        base_image_ref = job.base_image_ref
        plan = None
        if colocate and base_image_ref:
            plan = self._plan(base_image_ref, job.header_store)
            if job.header_store is None and plan.upload_store is not None:
                job.header_store = plan.upload_store
                job.target = self.cache.get().get(job.header_store)
        result = self._upload_locked(job)
        if plan is None or base_image_ref is None:
            return result
        cancel, image_id = job.cancel, job.image_id
        # the copies are an operation of their own: its requests get a
        # budget of their own, and its waits are bounded by
        # colocate_timeout (see colocate.copy_to_stores)
        try:
            with deadline.within(self.settings.operation_deadline, fresh=True):
                placed = self._colocate(result, plan, base_image_ref, cancel)
        except BaseException as exc:
            # strict mode, a changed image or a cancel: all or nothing
            self._cleanup(
                result.image_id,
                image_id is None or isinstance(exc, errors.ColocationError),
                exc,
            )
            raise
        return dataclasses.replace(result, colocation=placed)

    def _upload_locked(self, job: _Job) -> UploadResult:
        """The upload itself, in one of the process's upload slots."""
        image_id, meta = job.image_id, job.meta
        with _SLOTS.held():
            if image_id is not None:
                image = self._image(image_id)
                if image.get("status") != "queued":
                    raise errors.ImageStateConflict(
                        f"image {image_id} is {image.get('status')!r}, not "
                        "'queued'; it cannot take data",
                        image_id=image_id,
                    )
                if meta is None:
                    meta = ImageMeta(
                        name=image.get("name") or "",
                        disk_format=image.get("disk_format") or "raw",
                        container_format=image.get("container_format")
                        or "bare",
                    )
            if meta is None:
                raise ValueError("meta is needed when no image_id is given")
            job.meta = meta
            workdir = convert.make_workdir(self.settings.conversion_dir)
            try:
                with deadline.paused():
                    payload = self._prepare(
                        job.src, meta, job.source_format, workdir, job.cancel
                    )
                return self._upload(job, meta, payload)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def _plan(self, base_ref: str, explicit: str | None) -> placement.Plan:
        """Where an upload co-located with ``base_ref`` goes: the base
        image is read with the upload's credentials.
        """
        catalog = self.cache.get()
        if explicit is not None:
            return placement.plan_targets(
                base_ref, None, catalog, explicit_store=explicit
            )
        base: dict[str, Any] | None = None
        why = ""
        try:
            base = self._image(base_ref)
        except errors.GlanceAuthError as exc:
            why = f"is not visible ({exc.status_code})"
        except errors.GlanceRequestError as exc:
            if exc.status_code not in (400, 404):
                raise
            why = "was not found (or is not visible to the uploader)"
        plan = placement.plan_targets(
            base_ref, base, catalog, unknown_reason=why
        )
        LOG.info("co-location with image %s: %s", base_ref, plan.reason)
        return plan

    def _colocate(
        self,
        result: UploadResult,
        plan: placement.Plan,
        base_ref: str,
        cancel: threading.Event | None,
    ) -> placement.Colocation:
        """Copy the uploaded image to the plan's other stores, judge and
        verify each from what Glance reports.

        :raises IntegrityError: the image's size or digests changed.
        :raises ColocationError: strict mode and a store was not copied.
        """
        t0 = time.monotonic()
        if not plan.copy_to:
            return placement.Colocation(
                base_image=base_ref,
                uploaded_to=result.store,
                reason=plan.reason,
                skipped=plan.skipped,
            )
        image_id = result.image_id
        if result.verified:
            before: dict[str, Any] = {
                "size": result.size,
                "checksum": result.checksum,
                "os_hash_algo": result.os_hash_algo,
                "os_hash_value": result.os_hash_value,
            }
        else:
            before = self._image(image_id)
        strict = self.settings.colocate_strict
        try:
            copies, image = colocate.copy_to_stores(
                self.copy_client,
                image_id,
                plan.copy_to,
                timeout=self.settings.colocate_timeout,
                cancel=cancel,
            )
        except errors.GlanceError as exc:
            # the upload is done and verified: a copy phase Glance could
            # not finish is a store not copied, a failure only when strict
            if strict:
                raise
            LOG.warning(
                "image %s: the copies could not be finished: %s",
                image_id,
                exc.details(),
            )
            copies = [
                placement.StoreCopy(
                    store,
                    placement.FAILED,
                    f"Glance could not be asked: {exc}",
                )
                for store in plan.copy_to
            ]
        # what the copies prove is what Glance reports afterwards: the
        # image is the same one (copy-image hashes what it writes and
        # fails on a mismatch) and lists each store
        try:
            image = self._image(image_id)
        except errors.GlanceError:
            if strict:
                raise
            image = {}
        if image:
            changed = placement.unchanged(before, image)
            if changed:
                raise errors.IntegrityError(
                    f"image {image_id} changed while it was copied: "
                    + "; ".join(changed)
                    + ". It has been deleted.",
                    image_id=image_id,
                )
        held = placement.store_list(image.get("stores"))
        copies = [
            dataclasses.replace(
                c, status=placement.COPIED, reason="", verified=True
            )
            if c.store in held
            else c
            for c in copies
        ]
        placed = placement.Colocation(
            base_image=base_ref,
            uploaded_to=result.store,
            reason=plan.reason,
            copies=tuple(copies),
            skipped=plan.skipped,
            seconds=time.monotonic() - t0,
        )
        LOG.info("image %s: %s", image_id, placed.summary())
        if self.settings.colocate_strict and not placed.complete:
            reasons = "; ".join(
                f"{c.store}: {c.status} ({c.reason})"
                for c in copies
                if c.status != placement.COPIED
            )
            raise errors.ColocationError(
                f"image {image_id} did not reach every store of base image "
                f"{base_ref} ({placed.summary()}): {reasons}. Strict "
                "co-location ([volume_image] colocate_strict): it has been "
                "deleted.",
                image_id=image_id,
            )
        return placed

    def _prepare(
        self,
        src: Source,
        meta: ImageMeta,
        source_format: str,
        workdir: Path,
        cancel: threading.Event | None,
    ) -> Source:
        """Convert and compress as the formats ask; return what to send."""
        payload = src
        fmt = meta.disk_format
        # a header is inspected, and qemu-img rewrites the image from
        # what it read, also when the format stays: never sent unread
        if fmt != source_format or source_format != "raw":
            if fmt not in convert.CONVERTIBLE_FORMATS:
                raise errors.ConversionError(
                    f"cannot convert to disk_format {fmt!r}; supported: "
                    f"{', '.join(convert.CONVERTIBLE_FORMATS)}"
                )
            if src.path is None:
                raise errors.SourceError(
                    "conversion needs a source path, not a file object"
                )
            payload = Source(
                convert.convert(
                    src.path, source_format, fmt, workdir, cancel=cancel
                )
            )
        if meta.container_format == "compressed":
            if payload.path is None:
                raise errors.SourceError(
                    "compression needs a source path, not a file object"
                )
            payload = Source(
                convert.compress(
                    payload.path,
                    payload.size,
                    workdir,
                    chunk_size=self.settings.chunk_size,
                    cancel=cancel,
                )
            )
        return payload

    def _upload(self, job: _Job, meta: ImageMeta, src: Source) -> UploadResult:
        """Create or take the image, send ``src`` (the prepared data),
        verify, and clean up on any failure.
        """
        header_store, target, image_id = (
            job.header_store,
            job.target,
            job.image_id,
        )
        cancel = job.cancel
        if image_id is None:
            into = _Target(self._create(meta), created=True)
        else:
            into = _Target(image_id, created=False)
        LOG.info(
            "uploading %d bytes to image %s, store %s",
            src.size,
            into.image_id,
            header_store or "(default)",
        )
        unverified = None
        try:
            body, attempts = self._send(job, meta, src, into)
            record: dict[str, Any] = {}
            landed = target.id if target else None
            if self.settings.verify_upload:
                try:
                    landed, record = self._verify(
                        into.image_id, body, target, src
                    )
                except errors.GlanceUnavailable as exc:
                    # the data is in and Glance took it: an image is
                    # deleted only when it is known to be bad
                    unverified = (
                        f"Glance could not be asked to verify image "
                        f"{into.image_id} ({exc}); it was kept unverified"
                    )
                    LOG.warning("%s", unverified)
            if cancel is not None and cancel.is_set():
                # cancelled while verifying: what we made goes too
                raise errors.UploadCancelled("upload cancelled")
        except BaseException as exc:
            if isinstance(exc, errors.UnknownStore):
                self._name_valid_stores(exc, header_store)
            self._cleanup(into.image_id, into.created, exc)
            records.release(into.image_id)
            raise
        records.drop(into.image_id)
        seconds = time.monotonic() - job.t0
        LOG.info(
            "image %s: %d bytes in store %s in %.1fs (%d attempt(s))",
            into.image_id,
            src.size,
            landed,
            seconds,
            attempts,
        )
        return UploadResult(
            image_id=into.image_id,
            store=landed,
            size=src.size,
            checksum=record.get("checksum") or "",
            os_hash_algo=record.get("os_hash_algo") or "",
            os_hash_value=record.get("os_hash_value") or "",
            seconds=seconds,
            attempts=attempts,
            verified=self.settings.verify_upload and unverified is None,
            images=into.images,
            unverified_reason=unverified,
        )

    def _create(self, meta: ImageMeta) -> str:
        """Create a ``queued`` image, tagged (see :data:`TAGS`) and
        recorded as ours on this host until it settles.
        """
        image_id = str(uuid.uuid4())
        body = {**meta.body(), **_tags(image_id), "id": image_id}
        made = str(self.client.create_image(body)["id"])
        records.hold(self.settings.conversion_dir, made)
        return made

    def _send(
        self, job: _Job, meta: ImageMeta, src: Source, into: _Target
    ) -> tuple[MeteredBody, int]:
        """PUT ``src`` into ``into``, again from byte 0 after a failure
        worth another attempt.

        :returns: the body of the attempt that worked, and the attempts.
        """
        header_store, cancel = job.header_store, job.cancel
        settings = self.settings
        timeout = (
            self.client.connect_timeout,
            settings.upload_read_timeout,
        )
        attempt = 0
        retries = 0
        reauthenticated = False
        while True:
            attempt += 1
            with src.open() as f:
                body = MeteredBody(
                    f,
                    src.size,
                    chunk_size=settings.chunk_size,
                    hash_algo=self._stream_algo(),
                    progress=job.progress,
                    cancel=cancel,
                )
                image_id = into.image_id
                try:
                    # the data flow takes what the volume needs; each of
                    # its socket operations is bounded by the timeout
                    with deadline.paused():
                        self.client.upload_image_data(
                            image_id,
                            body,
                            src.size,
                            store_id=header_store,
                            timeout=timeout,
                            base_image_ref=job.base_image_ref,
                        )
                    return body, attempt
                except errors.GlanceAuthError as exc:
                    # the token expired or was revoked before Glance took
                    # the request (Glance 33 checks it once, when the
                    # request starts; an upload that outlives its token
                    # completes): authenticate again and send once more
                    if (
                        exc.status_code != 401
                        or reauthenticated
                        or (body.sent and not src.retriable)
                    ):
                        raise
                    reauthenticated = True
                    LOG.warning(
                        "image %s: 401 during upload; authenticating again",
                        image_id,
                    )
                    self.client.invalidate()
                except errors.VolumeImageError as exc:
                    if (
                        not (
                            _is_retriable(exc)
                            or self._nodes_disagree(exc, header_store)
                        )
                        or retries >= settings.upload_retries
                        or not src.retriable
                    ):
                        raise
                    delay = _waited(
                        min(
                            settings.upload_retry_delay * 2**retries,
                            _RETRY_DELAY_CAP,
                        ),
                        exc,
                    )
                    if _past(delay):
                        exc.hints.append(
                            "Not tried again: that would pass the "
                            "upload's deadline ([volume_image] "
                            "operation_deadline)."
                        )
                        raise
                    retries += 1
                    # no promise yet: the image must be usable first
                    LOG.warning(
                        "image %s: attempt %d failed after %d bytes (%s); "
                        "checking the image in %.1fs",
                        image_id,
                        attempt,
                        body.sent,
                        exc,
                        delay,
                    )
                    _pause(delay, cancel)
            self._ready_for_retry(into, meta, cancel)
            LOG.warning(
                "image %s: attempt %d of %d, from byte 0",
                into.image_id,
                attempt + 1,
                settings.upload_retries + 1,
            )

    def _ready_for_retry(
        self,
        into: _Target,
        meta: ImageMeta,
        cancel: threading.Event | None,
    ) -> None:
        """Have an image that can take data again: the same one once
        Glance has put it back to ``queued``; or, when it stays stuck and
        it is ours (its Glance node died mid-upload), a new one in its
        place.  A caller's stuck image is the caller's to delete.

        :raises ImageStateConflict: a caller's image stays stuck.
        """
        try:
            self._wait_until_queued(into.image_id, cancel)
            return
        except errors.ImageStateConflict:
            if not into.created:
                raise
        stuck = into.image_id
        into.image_id = self._create(meta)
        into.images += 1
        LOG.warning(
            "image %s stayed stuck after a failed upload (its Glance node "
            "died?); uploading into new image %s instead",
            stuck,
            into.image_id,
        )
        records.release(stuck)
        try:
            _idempotent(self.client.delete_image, stuck)
            records.forget(self.settings.conversion_dir, stuck)
        except errors.VolumeImageError as exc:
            LOG.error(
                "stuck image %s could not be deleted (%s): delete it, or "
                "run 'volume-image sweep'",
                stuck,
                exc,
            )

    def _nodes_disagree(
        self, exc: errors.VolumeImageError, store_id: str | None
    ) -> bool:
        """Whether Glance refused the store of an upload that another
        Glance node lists (nodes mid-way through a config change): worth
        another attempt, which may reach a node that has it.
        """
        if not isinstance(exc, errors.UnknownStore) or store_id is None:
            return False
        try:
            listed = (
                self.validator.ask_again(store_id).get(store_id) is not None
            )
        except errors.GlanceError:
            return False
        if listed:
            LOG.warning(
                "Glance refused store %r, but GET /v2/info/stores lists "
                "it: the Glance nodes disagree about their stores",
                store_id,
            )
        return listed

    def _wait_until_queued(
        self, image_id: str, cancel: threading.Event | None
    ) -> None:
        """Wait until Glance has restored the image after a failed send."""
        deadline = time.monotonic() + _QUEUED_WAIT
        while True:
            status = self._image(image_id).get("status")
            if status == "queued":
                return
            if status != "saving" or time.monotonic() > deadline:
                raise errors.ImageStateConflict(
                    f"image {image_id} is {status!r} after a failed upload "
                    "and Glance did not put it back to 'queued'; it cannot "
                    "be retried",
                    image_id=image_id,
                )
            _pause(0.2, cancel)

    def _stream_algo(self) -> str | None:
        """The one digest to compute while streaming: none without
        verification; else the one this Glance was seen to use, or
        ``[volume_image] hash_algo``.
        """
        if not self.settings.verify_upload:
            return None
        learnt = _GLANCE_ALGO.get(self.client.endpoint or "")
        return learnt or self.settings.hash_algo

    def _verify(
        self,
        image_id: str,
        body: MeteredBody,
        target: stores.StoreInfo | None,
        src: Source,
    ) -> tuple[str | None, dict[str, Any]]:
        """Compare what Glance reports with what we sent.

        One digest is compared: Glance's ``os_hash_value`` when Glance
        hashes with the algorithm we streamed, else (an older Glance, or
        another ``hashing_algorithm``) we read the source once more for
        Glance's algorithm, or for the md5 ``checksum`` when that is all
        Glance reports, and remember the algorithm for the next upload.
        Nothing is left unverified silently.

        :returns: the store the image landed in, and Glance's image record.
        :raises IntegrityError: any mismatch, or nothing to compare.
        """
        image = self._image(image_id)
        problems = []
        if image.get("status") != "active":
            problems.append(f"status is {image.get('status')!r}, not 'active'")
        if image.get("size") != body.sent:
            problems.append(
                f"size is {image.get('size')}, we sent {body.sent}"
            )
        problem = self._compare_digest(image_id, image, body, src)
        if problem:
            problems.append(problem)
        landed = [s for s in (image.get("stores") or "").split(",") if s]
        if target is not None and target.id not in landed:
            problems.append(
                f"it is in store(s) {','.join(landed) or '(none)'}, not "
                f"{target.id!r}"
            )
        if problems:
            raise errors.IntegrityError(
                f"image {image_id} does not match what was sent: "
                + "; ".join(problems)
                + ". It has been deleted.",
                image_id=image_id,
            )
        where = target.id if target else (landed[0] if landed else None)
        return where, image

    def _compare_digest(
        self,
        image_id: str,
        image: dict[str, Any],
        body: MeteredBody,
        src: Source,
    ) -> str | None:
        """The digest mismatch, or None when the digests agree."""
        glance_algo = image.get("os_hash_algo")
        if glance_algo and image.get("os_hash_value"):
            algo, field, theirs = (
                str(glance_algo),
                "os_hash_value",
                image["os_hash_value"],
            )
        elif image.get("checksum"):
            algo, field, theirs = "md5", "checksum", image["checksum"]
        else:
            return "Glance reports neither os_hash_value nor checksum"
        assert body.hash is not None
        if body.hash.name == algo:
            ours = body.hash.hexdigest()
        else:
            # rare: learnt once per Glance, then streamed right
            LOG.warning(
                "image %s: Glance reports %s, we streamed %s; reading the "
                "source again to compare %s",
                image_id,
                algo,
                body.hash.name,
                field,
            )
            _GLANCE_ALGO[self.client.endpoint or ""] = algo
            if not src.retriable:
                return (
                    f"Glance reports {algo}, and the source cannot be read "
                    "again to compute it"
                )
            try:
                with deadline.paused():
                    ours = offload.run(
                        digest_of, src, algo, self.settings.chunk_size
                    )
            except ValueError:
                return f"{algo} ({field}) is not a digest we can compute"
        if ours != theirs:
            return f"{field} ({algo}) is {theirs}, we sent {ours}"
        return None

    def _name_valid_stores(
        self, exc: errors.UnknownStore, store_id: str | None
    ) -> None:
        """Glance refused the store: say which stores are valid now, or
        that the Glance nodes disagree when another one lists it.
        """
        try:
            catalog = self.validator.ask_again(store_id)
        except errors.GlanceError:
            return
        if store_id is not None and catalog.get(store_id) is not None:
            exc.hints.append(
                "The Glance nodes disagree: another node lists store "
                f"{store_id!r}. Check that every Glance node has the same "
                "enabled_backends; the volume type may well be right"
            )
            return
        exc.hints.append(
            "Writable stores now: "
            + (", ".join(catalog.writable_ids) or "none")
        )

    def _image(self, image_id: str) -> dict[str, Any]:
        """GET the image, riding out a brief Glance outage."""
        return _idempotent(self.client.get_image, image_id)

    def _cleanup(
        self, image_id: str, created: bool, exc: BaseException
    ) -> None:
        """Delete what this call made; never anything else."""
        # its own budget: cleanup must be tried also when the operation's
        # deadline is what failed it
        with deadline.within(self.settings.operation_deadline, fresh=True):
            self._delete_made(image_id, created, exc)

    def _delete_made(
        self, image_id: str, created: bool, exc: BaseException
    ) -> None:
        try:
            if not created and not isinstance(exc, errors.IntegrityError):
                # a caller's image: only while it holds no data
                status = self._image(image_id).get("status")
                if status not in _CLEANUP_STATES:
                    return
            _idempotent(self.client.delete_image, image_id)
            records.drop(image_id)
            LOG.info("image %s deleted after a failed upload", image_id)
            if isinstance(exc, errors.UploadCancelled):
                exc.hints.append(f"Image {image_id} was deleted.")
        except errors.VolumeImageError as cleanup_exc:
            hint = (
                f"image {image_id} could not be deleted ({cleanup_exc}); it "
                "may be left in 'saving' state: delete it when Glance is back"
            )
            LOG.error(hint)
            if isinstance(exc, errors.VolumeImageError):
                exc.hints.append(hint)
