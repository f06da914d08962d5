"""The upload pipeline: a volume becomes a Glance image in the right store.

:class:`Uploader` orchestrates; each step has a module of its own::

    resolve the store (spec, cached catalog) -> plan co-location (colocate)
    -> in one of the process's upload slots (slots):
       read a caller's image, or create ours (glance_ops)
       -> convert/compress as the formats ask (prepare, convert)
       -> PUT the metered stream, again from byte 0 after a retriable
          failure (send)
       -> verify what Glance reports (verify)
    -> copy to the base image's other stores (colocate) -> UploadResult
    on failure: delete what this call made, never anything else (glance_ops)

Nothing is created for a store already known to be invalid.  A retry never
resends a half-read stream: it waits until Glance has put the image back
to ``queued`` and reopens the source at byte 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import deadline, placement, specs, stores
from volume_image.core.validation import StoreCatalogCache, Validator
from volume_image.pipeline import convert, prepare, records, retry, slots
from volume_image.pipeline.colocate import Colocator
from volume_image.pipeline.glance_ops import TAGS, ImageOps
from volume_image.pipeline.send import Sender
from volume_image.pipeline.stream import MeteredBody, ProgressCallback, Source
from volume_image.pipeline.types import ImageMeta, Job, Target, UploadResult
from volume_image.pipeline.verify import Verdict, Verifier

__all__ = [
    "TAGS",
    "ImageMeta",
    "Source",
    "UploadResult",
    "Uploader",
]

LOG = logging.getLogger(__name__)

# how many answers of Glance are asked before a store is called gone
_STORE_ASKS = 3


@dataclasses.dataclass(frozen=True)
class _Steps:
    """The collaborators of one upload, on the uploader's settings."""

    ops: ImageOps
    sender: Sender
    verifier: Verifier
    colocator: Colocator


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
            lambda: retry.ride_out(client.get_store_catalog),
            ttl=self.settings.store_cache_ttl,
        )
        # an unknown store is asked about again before the spec is called
        # wrong: the Glance nodes behind a load balancer may disagree
        self.validator = Validator(
            self.cache, asks=_STORE_ASKS, refresh_after=0.0
        )
        slots.SLOTS.limit = self.settings.max_concurrent_uploads

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
            :mod:`volume_image.pipeline.colocate`); default ``[volume_image]
            colocate_with_base_image``.
        :raises SpecError: the store is invalid; nothing was created.
        :raises GlanceError: Glance could not be asked or refused us.
        :raises UploadError: the upload failed and was cleaned up;
            :class:`~volume_image.errors.UnsafeSource` before anything
            was sent; :class:`~volume_image.errors.ColocationError` in
            strict co-location.
        """
        t0 = time.monotonic()
        for name, ref in (
            ("image_id", image_id),
            ("base_image_ref", base_image_ref),
        ):
            if ref is not None and not placement.is_image_ref(ref):
                raise ValueError(
                    f"{name} {ascii(ref)[:80]} is not an image id"
                )
        # a source that cannot be read fails before Glance is asked
        src = source if isinstance(source, Source) else Source(source)
        if colocate is None:
            colocate = self.settings.colocate_with_base_image
        steps = self._steps()
        with deadline.within(self.settings.operation_deadline):
            store, target, plan = self._where(
                extra_specs,
                store_id,
                base_image_ref if colocate else None,
                steps.colocator,
            )
            job = Job(
                src=src,
                image_id=image_id,
                source_format=source_format,
                base_image_ref=base_image_ref,
                store=store,
                target=target,
                progress=progress,
                cancel=cancel,
                t0=t0,
            )
            result = self._upload_in_slot(job, meta, steps)
            if plan is None or base_image_ref is None:
                return result
            return self._colocated(job, result, plan, base_image_ref, steps)

    def _where(
        self,
        extra_specs: Mapping[str, Any] | None,
        store_id: str | None,
        colocate_with: str | None,
        colocator: Colocator,
    ) -> tuple[str | None, stores.StoreInfo | None, placement.Plan | None]:
        """The store to name, the store expected to hold the image, and
        the co-location plan when the upload is co-located with
        ``colocate_with``; a plan may choose the store.
        """
        store, target = self.resolve_store(
            extra_specs=extra_specs, store_id=store_id
        )
        if not colocate_with:
            return store, target, None
        plan = colocator.plan(self.cache.get(), colocate_with, store)
        if store is None and plan.upload_store is not None:
            store = plan.upload_store
            target = self.cache.get().get(store)
        return store, target, plan

    def _steps(self) -> _Steps:
        # built for each upload: they follow the settings as they are now
        ops = ImageOps(self.client, self.settings)
        return _Steps(
            ops=ops,
            sender=Sender(self.client, self.settings, self.validator, ops),
            verifier=Verifier(ops, self.settings),
            colocator=Colocator(ops, self.copy_client, self.settings),
        )

    def _colocated(
        self,
        job: Job,
        result: UploadResult,
        plan: placement.Plan,
        base_ref: str,
        steps: _Steps,
    ) -> UploadResult:
        """``result``, copied to the plan's other stores; all or nothing
        in strict mode, after a changed image or a cancel.
        """
        # the copies are an operation of their own: its requests get a
        # budget of their own, and its waits are bounded by
        # colocate_timeout (see copy_image.copy_to_stores)
        try:
            with deadline.within(self.settings.operation_deadline, fresh=True):
                placed = steps.colocator.place(
                    result, plan, base_ref, job.cancel
                )
        except BaseException as exc:
            steps.ops.cleanup(
                result.image_id,
                job.image_id is None
                or isinstance(exc, errors.ColocationError),
                exc,
            )
            raise
        return dataclasses.replace(result, colocation=placed)

    def _upload_in_slot(
        self, job: Job, meta: ImageMeta | None, steps: _Steps
    ) -> UploadResult:
        """The upload itself, in one of the process's upload slots."""
        with slots.SLOTS.held():
            meta = self._meta(job, meta, steps.ops)
            workdir = convert.make_workdir(self.settings.conversion_dir)
            try:
                with deadline.paused():
                    payload = prepare.payload(
                        job,
                        meta,
                        workdir,
                        self.settings.chunk_size,
                        compress=self.settings.compress_on_upload,
                        limits=self.settings.qemu_img_limits,
                    )
                return self._upload(job, meta, payload, steps)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _meta(job: Job, meta: ImageMeta | None, ops: ImageOps) -> ImageMeta:
        """``meta``, or a caller's image's own; that image must be
        ``queued``.

        :raises ImageStateConflict: the caller's image cannot take data.
        """
        if job.image_id is not None:
            image = ops.get(job.image_id)
            if image.get("status") != "queued":
                raise errors.ImageStateConflict(
                    f"image {job.image_id} is {image.get('status')!r}, not "
                    "'queued'; it cannot take data",
                    image_id=job.image_id,
                )
            if meta is None:
                meta = ImageMeta(
                    name=image.get("name") or "",
                    disk_format=image.get("disk_format") or "raw",
                    container_format=image.get("container_format") or "bare",
                )
        if meta is None:
            raise ValueError("meta is needed when no image_id is given")
        return meta

    def _upload(
        self, job: Job, meta: ImageMeta, payload: Source, steps: _Steps
    ) -> UploadResult:
        """Create or take the image, send ``payload`` (the prepared data),
        verify, and clean up on any failure.
        """
        if job.image_id is None:
            into = Target(steps.ops.create(meta), created=True)
        else:
            into = Target(job.image_id, created=False)
        LOG.info(
            "uploading %d bytes to image %s, store %s",
            payload.size,
            into.image_id,
            job.store or "(default)",
        )
        try:
            body, attempts = steps.sender.send(job, meta, payload, into)
            verdict = steps.verifier.verify(
                into.image_id, body, job.target, payload
            )
            if job.cancelled:
                # cancelled while verifying: what we made goes too
                raise errors.UploadCancelled("upload cancelled")
        except BaseException as exc:
            steps.ops.cleanup(into.image_id, into.created, exc)
            records.release(into.image_id)
            raise
        records.drop(into.image_id)
        return self._result(job, into, body, attempts, verdict)

    @staticmethod
    def _result(
        job: Job,
        into: Target,
        body: MeteredBody,
        attempts: int,
        verdict: Verdict,
    ) -> UploadResult:
        seconds = time.monotonic() - job.t0
        LOG.info(
            "image %s: %d bytes in store %s in %.1fs (%d attempt(s))",
            into.image_id,
            body.size,
            verdict.store,
            seconds,
            attempts,
        )
        return UploadResult(
            image_id=into.image_id,
            store=verdict.store,
            size=body.size,
            checksum=verdict.field("checksum"),
            os_hash_algo=verdict.field("os_hash_algo"),
            os_hash_value=verdict.field("os_hash_value"),
            seconds=seconds,
            attempts=attempts,
            verified=verdict.verified,
            images=into.images,
            unverified_reason=verdict.unverified_reason,
        )
