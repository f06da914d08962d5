"""The validation hook a block-storage API calls before it stores extra
specs.

Upstream Cinder checks ``image_service:store_id`` on two of its write
paths, compares the value verbatim, asks Glance on every request and turns
a Glance outage into an opaque 500.  :class:`ExtraSpecsHook` is the one
check every write path calls instead: the full rule set, a cached store
catalog, and errors that carry the status an API answers with.

A sketch of the call in Cinder's ``types_extra_specs`` controller::

    import volume_image

    volume_image.register_opts(CONF)
    _STORE_HOOK = volume_image.ExtraSpecsHook.from_conf(CONF)

    # create() (POST .../extra_specs) and update() (PUT .../{key}) call
    # it where they call image_utils.validate_stores_id today; the
    # types controller's create() calls it on its inline extra_specs
    def create(self, req, type_id, body):
        context = req.environ['cinder.context']
        context.authorize(policy.CREATE_POLICY)
        ...
        specs = body['extra_specs']
        try:
            _STORE_HOOK.check(specs)
        except volume_image.VolumeImageError as exc:
            # str(exc): the message for the caller; exc.details() adds
            # Glance's endpoint and request id, for the log
            raise webob.exc.status_map[exc.api_status](
                explanation=str(exc))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import deadline, specs, validation

__all__ = ["ExtraSpecsHook"]

LOG = logging.getLogger(__name__)


class ExtraSpecsHook:
    """Check the extra specs of one write before an API stores them.

    :meth:`check` returns nothing when the specs may be stored and raises
    otherwise:

    * :class:`~volume_image.errors.SpecError` (``api_status`` 400): an
      invalid, reserved, unknown or read-only store, an
      ``image_service:`` key that is mistyped or not lower-case, or
      (:class:`~volume_image.errors.MultiStoreDisabled`) any store on a
      Glance without multi-store;
    * :class:`~volume_image.errors.StoreCheckUnavailable` (503): a store
      is named and Glance cannot be asked.  With ``fail_open`` the write
      is let through instead, with a logged warning.

    Specs without the ``image_service:`` namespace never reach Glance.
    Thread-safe: the catalog cache is shared by all callers.

    :param validator: the validator and its catalog cache.
    :param fail_open: let a store write through when Glance cannot be
        asked.
    """

    def __init__(
        self,
        validator: validation.Validator,
        *,
        fail_open: bool = False,
        budget: float | None = None,
    ) -> None:
        self.validator = validator
        self.fail_open = fail_open
        #: seconds one check may spend asking Glance, all requests
        #: together (the store list may take two: detail, then basic)
        self.budget = budget

    @classmethod
    def from_conf(
        cls,
        conf: cfg.ConfigOpts,
        *,
        client: glance.GlanceClient | None = None,
        group: str = config.GROUP,
        glance_group: str = config.GLANCE_GROUP,
    ) -> ExtraSpecsHook:
        """Build a hook from ``[glance]`` and ``[volume_image]`` options.

        :param conf: a configuration on which
            :func:`volume_image.config.register_opts` ran.
        :param client: a Glance client to use instead of one built from
            ``[glance]``.
        :param group: and ``glance_group``: the group names given to
            :func:`~volume_image.config.register_opts`.
        """
        settings = config.Settings.from_conf(conf, group)
        if client is None:
            client = glance.GlanceClient.from_conf(
                conf,
                request_timeout=settings.api_timeout,
                group=group,
                glance_group=glance_group,
            )
        cache = validation.StoreCatalogCache(
            client.get_store_catalog, ttl=settings.store_cache_ttl
        )
        return cls(
            validation.Validator(cache),
            fail_open=settings.fail_open,
            budget=settings.api_timeout,
        )

    def check(self, extra_specs: Mapping[str, Any]) -> None:
        """Raise if ``extra_specs`` must not be stored.

        :param extra_specs: the specs one request writes (not the merged
            specs of the type).
        :raises SpecError: a rule failed (400).
        :raises MultiStoreDisabled: a store is named on a single-store
            Glance (400).
        :raises StoreCheckUnavailable: Glance cannot be asked (503).
        """
        split = specs.split_extra_specs(extra_specs, strict_case=True)
        if not split.has_store_id:
            return
        key = split.original_keys[specs.STORE_ID_KEY]
        value = split.store_id
        try:
            if self.budget is None:
                self.validator.validate_extra_specs(
                    extra_specs, strict_case=True
                )
            else:
                with deadline.within(self.budget):
                    self.validator.validate_extra_specs(
                        extra_specs, strict_case=True
                    )
        except errors.GlanceError as exc:
            if self.fail_open:
                LOG.warning(
                    "fail_open: %s=%r stored unchecked: %s",
                    key,
                    value,
                    exc.details(),
                )
                return
            LOG.error("cannot check %s=%r: %s", key, value, exc.details())
            # str(exc), not details(): the API's caller need not learn
            # Glance's internal endpoint; the log has it
            raise errors.StoreCheckUnavailable(
                f"cannot check {key}={value!r} now: the Glance store list "
                f"is unavailable ({exc}). Nothing was stored; try "
                "again when Glance answers.",
                status_code=exc.status_code,
                request_id=exc.request_id,
            ) from exc
