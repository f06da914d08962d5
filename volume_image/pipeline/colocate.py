"""Co-location, the upload's step: read the base image for
:mod:`volume_image.core.placement`'s plan, have the uploaded image copied
to the other stores it chose (:mod:`volume_image.pipeline.copy_image`),
and confirm each copy from what Glance reports afterwards
(:class:`Colocator`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import placement, stores
from volume_image.core.placement import COPIED, FAILED, StoreCopy, store_list
from volume_image.pipeline.copy_image import copy_to_stores
from volume_image.pipeline.glance_ops import ImageOps
from volume_image.pipeline.types import UploadResult

__all__ = ["Colocator"]

LOG = logging.getLogger(__name__)


class Colocator:
    """Co-locates an upload with its base image.

    :param ops: the image operations, with the upload's credentials.
    :param copy_client: the client for ``copy-image`` requests
        (credentials of ``[volume_image_copy]``).
    :param settings: the ``[volume_image]`` settings.
    """

    def __init__(
        self,
        ops: ImageOps,
        copy_client: glance.GlanceClient,
        settings: config.Settings,
    ) -> None:
        self.ops = ops
        self.copy_client = copy_client
        self.settings = settings

    def plan(
        self,
        catalog: stores.StoreCatalog,
        base_ref: str,
        explicit: str | None,
    ) -> placement.Plan:
        """Where an upload co-located with ``base_ref`` goes: the base
        image is read with the upload's credentials.
        """
        if explicit is not None:
            return placement.plan_targets(
                base_ref, None, catalog, explicit_store=explicit
            )
        base: dict[str, Any] | None = None
        why = ""
        try:
            base = self.ops.get(base_ref)
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

    def place(
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
        before = self._before(result)
        copies = self._copy(image_id, plan.copy_to, cancel)
        copies = self._confirm(image_id, before, copies)
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
                if c.status != COPIED
            )
            raise errors.ColocationError(
                f"image {image_id} did not reach every store of base image "
                f"{base_ref} ({placed.summary()}): {reasons}. Strict "
                "co-location ([volume_image] colocate_strict).",
                image_id=image_id,
            )
        return placed

    def _before(self, result: UploadResult) -> dict[str, Any]:
        """What the copies must not change: the verified upload's size
        and digests, or Glance's record of an unverified one.
        """
        if not result.verified:
            return self.ops.get(result.image_id)
        return {
            "size": result.size,
            "checksum": result.checksum,
            "os_hash_algo": result.os_hash_algo,
            "os_hash_value": result.os_hash_value,
        }

    def _copy(
        self,
        image_id: str,
        targets: Sequence[str],
        cancel: threading.Event | None,
    ) -> list[StoreCopy]:
        """Each target's outcome as the copies report it."""
        try:
            copies, _ = copy_to_stores(
                self.copy_client,
                image_id,
                targets,
                timeout=self.settings.colocate_timeout,
                cancel=cancel,
            )
        except errors.GlanceError as exc:
            # the upload is done and verified: a copy phase Glance could
            # not finish is a store not copied, a failure only when strict
            if self.settings.colocate_strict:
                raise
            LOG.warning(
                "image %s: the copies could not be finished: %s",
                image_id,
                exc.details(),
            )
            return [
                StoreCopy(store, FAILED, f"Glance could not be asked: {exc}")
                for store in targets
            ]
        return copies

    def _confirm(
        self,
        image_id: str,
        before: dict[str, Any],
        copies: list[StoreCopy],
    ) -> list[StoreCopy]:
        """The copies as Glance reports them afterwards: the image is the
        same one (copy-image hashes what it writes and fails on a
        mismatch) and lists each copied store.

        :raises IntegrityError: the image's size or digests changed.
        """
        try:
            image = self.ops.get(image_id)
        except errors.GlanceError:
            if self.settings.colocate_strict:
                raise
            image = {}
        if image:
            changed = placement.unchanged(before, image)
            if changed:
                raise errors.IntegrityError(
                    f"image {image_id} changed while it was copied: "
                    + "; ".join(changed)
                    + ".",
                    image_id=image_id,
                )
        held = store_list(image.get("stores"))
        return [
            dataclasses.replace(c, status=COPIED, reason="", verified=True)
            if c.store in held
            else c
            for c in copies
        ]
