"""The only module that speaks HTTP to Glance.

Requests go through a keystoneauth1 :class:`~keystoneauth1.adapter.Adapter`
(service type ``image``), so endpoint discovery, tokens, TLS and timeouts
follow the usual OpenStack options.  Every keystoneauth1 or requests
exception, and every unexpected status, becomes one of our
:mod:`volume_image.errors` here and nowhere else.

Why not python-glanceclient: it uploads with ``Transfer-Encoding:
chunked`` in 1 MiB chunks (which uWSGI's default ``chunked-input-limit``
refuses), it has no exception class for 410 or 415, and in its non-session
mode it drops extra headers such as ``X-Image-Meta-Store``.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import html
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, Protocol

import requests
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg

from volume_image import config, errors
from volume_image.clients import _transport
from volume_image.core import stores
from volume_image.core.text import printable

__all__ = ["CopyAnswer", "GlanceClient", "SizedBody", "from_response"]

LOG = logging.getLogger(__name__)

_MULTISTORE_OFF = "multi backend is not supported"
# bounds a Glance that keeps answering with a "next" link
_MAX_PAGES = 1000
#: the default cap on one answer's body (see [volume_image]
#: max_response_bytes): Glance's answers are kilobytes
DEFAULT_MAX_RESPONSE = 16 * 1024 * 1024
#: see [volume_image] answer_deadline
DEFAULT_ANSWER_DEADLINE = _transport.DEFAULT_ANSWER_DEADLINE


_TAG = re.compile(r"<[^>]+>")


class SizedBody(Protocol):
    """An upload body: iterable bytes with a known length.

    requests sends such an object with ``Content-Length`` (never chunked)
    and urllib3 sends each chunk as it comes.
    """

    def __iter__(self) -> Any: ...

    def __len__(self) -> int: ...


def _message(resp: requests.Response) -> str:
    """The human part of a Glance error body (JSON or HTML)."""
    text = ""
    try:
        doc = resp.json()
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        inner = doc.get("message") or doc.get("error") or doc
        if isinstance(inner, dict):
            inner = inner.get("message", "")
        text = str(inner)
    if not text:
        text = resp.text or ""
        # the HTML page repeats the title in <title> and <h1>
        text = text.split("</h1>", 1)[-1]
    text = html.unescape(_TAG.sub(" ", text))
    # Glance's words end up on terminals and in logs
    return printable(" ".join(text.split()) or resp.reason or "")


def _json(resp: requests.Response, what: str) -> Any:
    """The JSON object of a 2xx answer.

    :raises GlanceRequestError: it is not JSON, nested too deeply, or not
        an object.
    """
    try:
        doc = resp.json()
    except (ValueError, RecursionError) as exc:
        raise errors.GlanceRequestError(
            f"{what} answered {resp.status_code} with a body that is not "
            "usable JSON",
            request_id=_request_id(resp),
        ) from exc
    if not isinstance(doc, dict):
        raise errors.GlanceRequestError(
            f"{what} answered {resp.status_code} with JSON that is not an "
            "object",
            request_id=_request_id(resp),
        )
    return doc


def _request_id(resp: requests.Response | None) -> str | None:
    if resp is None:
        return None
    return resp.headers.get("x-openstack-request-id")


#: Glance's status -> our class and what to say after Glance's message
#: ("{text}" is "<what> answered <status>: <Glance's message>"), as
#: keystoneauth's own table does; 5xx is GlanceUnavailable, anything else
#: GlanceRequestError.  400 and 410 for an upload naming a store are the
#: two cases decided by Glance's message (see :func:`from_response`).
_STATUS_ERRORS: dict[int, tuple[type[errors.VolumeImageError], str]] = {
    401: (
        errors.GlanceAuthError,
        "{text}. Glance refused the token: check the credentials, or that "
        "the token is neither expired nor revoked",
    ),
    403: (
        errors.GlanceAuthError,
        "not allowed: {text}. The user's role does not allow this: uploads "
        "need the member role in the project, store details need admin",
    ),
    409: (
        errors.ImageStateConflict,
        "{text}. The image is not in 'queued' state",
    ),
    413: (
        errors.QuotaExceeded,
        "{text}. The image quota, Glance's image_size_cap or the store's "
        "space is exhausted",
    ),
    415: (
        errors.FormatRejected,
        "{text}. Glance refused the data for this disk_format",
    ),
}


def retry_after(resp: requests.Response) -> float | None:
    """Seconds Glance (or a proxy in front of it) asks to wait, from a
    ``Retry-After`` header in seconds or as an HTTP date; None without.
    """
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def from_response(
    resp: requests.Response,
    what: str,
    *,
    endpoint: str | None = None,
    store_id: str | None = None,
    image_id: str | None = None,
) -> errors.VolumeImageError:
    """Build the error for an unexpected Glance answer.

    The status picks the class (:data:`_STATUS_ERRORS`); for an upload
    with a named store, 400 and 410 naming the store mean an unknown or
    read-only store.  A 5xx carries Glance's ``Retry-After``, if any.

    :param resp: Glance's answer.
    :param what: what we asked, e.g. ``"GET /v2/info/stores"``.
    :param endpoint: the Glance endpoint.
    :param store_id: the store named in an upload, if any.
    :param image_id: the image of an image request, if any.
    """
    status = resp.status_code
    msg = _message(resp)
    common: dict[str, Any] = {
        "status_code": status,
        "request_id": _request_id(resp),
        "endpoint": endpoint,
    }
    text = f"{what} answered {status}: {msg.rstrip('.')}"
    about_store = store_id is not None and "store" in msg.lower()
    if about_store and status == 400:
        return errors.UnknownStore(
            f"Glance has no store {store_id!r} any more ({msg}); it was "
            "removed since the volume type was set. Run 'volume-image "
            "audit' and fix the volume type",
            key="image_service:store_id",
            value=store_id,
            **common,
        )
    if about_store and status == 410:
        return errors.ReadOnlyStore(
            f"Glance refused data for store {store_id!r}: {msg}. Choose a "
            "writable store",
            key="image_service:store_id",
            value=store_id,
            **common,
        )
    if status in _STATUS_ERRORS:
        cls, template = _STATUS_ERRORS[status]
        if issubclass(cls, errors.UploadError):
            common["image_id"] = image_id
        return cls(template.format(text=text), **common)
    if status >= 500:
        unavailable = errors.GlanceUnavailable(
            f"Glance is unavailable: {text}", **common
        )
        unavailable.retry_after = retry_after(resp)
        return unavailable
    return errors.GlanceRequestError(text, **common)


@dataclasses.dataclass(frozen=True)
class CopyAnswer:
    """Glance's answer to a ``copy-image`` import request.

    The statuses that say something about the stores (202 accepted, 400
    already present, 403/404 not permitted or not visible, 409 busy or
    impossible) are answers, not errors: the co-location step judges
    them.  Anything else is raised by :meth:`GlanceClient.request_copy`.
    """

    status: int
    message: str = ""
    request_id: str | None = None


@dataclasses.dataclass(frozen=True)
class LocationAnswer:
    """Glance's answer to ``add_location``."""

    status: int
    message: str
    request_id: str | None


class GlanceClient:
    """A small Glance v2 client for store discovery and image upload.

    :param adapter: a keystoneauth1 Adapter for the image service; tests
        and callers with their own session pass one in.
    :param use_store_detail: try ``/v2/info/stores/detail`` first.
    """

    def __init__(
        self,
        adapter: ks_adapter.Adapter,
        *,
        use_store_detail: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE,
        request_timeout: float | None = None,
        answer_deadline: float = DEFAULT_ANSWER_DEADLINE,
    ) -> None:
        self.adapter = adapter
        #: seconds one answer may take to arrive whole
        self._answer_deadline = (
            answer_deadline
            if request_timeout is None
            else min(answer_deadline, request_timeout)
        )
        #: on an API's request path: each request's timeout, and no retry
        #: of any kind (a hung Glance must not hold a worker for long)
        self._request_timeout = request_timeout
        self._use_detail = use_store_detail
        self._max_bytes = max_response_bytes
        self._seen_endpoint: str | None = None

    @classmethod
    def from_conf(
        cls,
        conf: cfg.ConfigOpts,
        *,
        session: ks_session.Session | None = None,
        auth: Any = None,
        request_timeout: float | None = None,
        group: str = config.GROUP,
        glance_group: str = config.GLANCE_GROUP,
    ) -> GlanceClient:
        """Build a client from the ``[glance]`` options.

        :param conf: a configuration on which
            :func:`volume_image.config.register_opts` ran.
        :param group: and ``glance_group``: the group names given to it.
        :param session: an existing keystoneauth1 session to share.
        :param auth: an auth plugin overriding ``[glance] auth_type``.
        :param request_timeout: for an API's request path: the timeout of
            each request, which is then never retried.
        :raises GlanceAuthError: the auth options are incomplete.
        """
        session_kw, adapter_kw = config.loader_defaults(conf, glance_group)
        try:
            if auth is None:
                auth = ks_loading.load_auth_from_conf_options(
                    conf, glance_group
                )
            if session is None:
                session = ks_loading.load_session_from_conf_options(
                    conf, glance_group, auth=auth, **session_kw
                )
            adapter = ks_loading.load_adapter_from_conf_options(
                conf, glance_group, session=session, auth=auth, **adapter_kw
            )
        except ks_exc.ClientException as exc:
            raise _translate(
                exc, f"load the [{glance_group}] options"
            ) from exc
        ours = conf[group]
        return cls(
            adapter,
            use_store_detail=ours.use_store_detail,
            max_response_bytes=ours.max_response_bytes,
            request_timeout=request_timeout,
            answer_deadline=ours.answer_deadline,
        )

    @property
    def endpoint(self) -> str | None:
        """The Glance endpoint as far as it is known without asking
        anyone: the configured one, or the one the last answer came
        from; None before any (error messages must do no network I/O).
        """
        return _transport.endpoint_of(self.adapter) or self._seen_endpoint

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a connection: the session's timeout, or
        :data:`volume_image.config.DEFAULT_TIMEOUT` when it has none
        (``openstack``'s sessions have none unless ``api_timeout`` is
        set, and a black-holed Glance must not hang an upload).
        """
        timeout = self.adapter.session.timeout
        return float(timeout) if timeout else config.DEFAULT_TIMEOUT

    def invalidate(self) -> bool:
        """Drop the cached token, so the next request authenticates again.

        :returns: whether there was a token to drop.
        """
        try:
            return bool(self.adapter.invalidate())
        except ks_exc.ClientException:
            return False

    def _request(
        self, method: str, path: str, **kwargs: Any
    ) -> requests.Response:
        what = f"{method} {path}"
        self._authenticate(what)
        headers = kwargs.pop("headers", {})
        # error bodies in JSON instead of an HTML page
        headers.setdefault("Accept", "application/json")
        if self._request_timeout is not None:
            kwargs.setdefault("timeout", self._request_timeout)
            kwargs["connect_retries"] = 0
            kwargs["status_code_retries"] = 0
        try:
            resp = _transport.send(
                self.adapter,
                method,
                path,
                headers=headers,
                cap=self._max_bytes,
                answer_deadline=self._answer_deadline,
                **kwargs,
            )
        except _transport.OutOfTime as exc:
            raise _out_of_time(what, self.endpoint) from exc
        except _transport.TooSlow as exc:
            slow = errors.GlanceUnavailable(
                f"Glance is unavailable: {what}: its answer did not arrive "
                "whole in time ([volume_image] answer_deadline, "
                f"{self._answer_deadline:g} s, or what was left of the "
                "operation_deadline)",
                endpoint=self.endpoint,
            )
            slow.timed_out = True
            raise slow from exc
        except _transport.TooLarge as exc:
            raise errors.GlanceRequestError(
                f"{what}: Glance's answer is longer than {self._max_bytes} "
                "bytes ([volume_image] max_response_bytes); it was not "
                "read further",
                endpoint=self.endpoint,
            ) from exc
        except ks_exc.ClientException as exc:
            raise _translate(exc, what, self.endpoint) from exc
        except requests.RequestException as exc:
            raise _translate(exc, what, self.endpoint) from exc
        base = resp.url.split(path.split("?")[0], 1)[0] if resp.url else ""
        self._seen_endpoint = base or self._seen_endpoint
        if 300 <= resp.status_code < 400:
            target = resp.headers.get("Location") or "(no Location)"
            raise errors.GlanceRequestError(
                f"{what} answered {resp.status_code}, a redirect to "
                f"{target}; it was not followed, so that credentials never "
                "go to another address. Set the Glance endpoint to the "
                "address that serves the API",
                status_code=resp.status_code,
                request_id=_request_id(resp),
                endpoint=self.endpoint,
            )
        return resp

    def _authenticate(self, what: str) -> None:
        """Get a token first, on its own: a Keystone failure is then
        reported as Keystone's, never as "Glance is unavailable".  The
        auth plugin caches its token, so this costs no request while the
        token is valid.
        """
        auth = self.adapter.auth or self.adapter.session.auth
        if auth is None:
            return
        try:
            self.adapter.get_token()
        except (ks_exc.ClientException, requests.RequestException) as exc:
            raise _translate_auth(exc, what, self.endpoint) from exc

    def get_store_catalog(self) -> stores.StoreCatalog:
        """Fetch and parse the stores Glance offers.

        Tries ``/v2/info/stores/detail`` (admin only) first, when enabled,
        and falls back to ``/v2/info/stores`` on 403 without failing.

        :returns: the catalog; ``multistore`` is false when Glance
            answers ``404 Multi backend is not supported at this site``.
        :raises GlanceError: Glance cannot be asked or answers nonsense.
        """
        if self._use_detail:
            resp = self._request("GET", "/v2/info/stores/detail")
            if resp.status_code == 200:
                return self._parse(resp, detailed=True)
            if resp.status_code == 403:
                # not an admin, this time: not remembered, as one client
                # serves callers with other roles (the filter forwards each
                # caller's token); the store list is cached anyway
                LOG.debug("stores/detail forbidden; using the basic list")
            elif resp.status_code != 404:
                raise from_response(
                    resp, "GET /v2/info/stores/detail", endpoint=self.endpoint
                )
        resp = self._request("GET", "/v2/info/stores")
        if resp.status_code == 200:
            return self._parse(resp, detailed=False)
        if (
            resp.status_code == 404
            and _MULTISTORE_OFF in _message(resp).lower()
        ):
            return stores.StoreCatalog(stores=(), multistore=False)
        raise from_response(
            resp, "GET /v2/info/stores", endpoint=self.endpoint
        )

    def _parse(
        self, resp: requests.Response, *, detailed: bool
    ) -> stores.StoreCatalog:
        try:
            return stores.parse_stores(resp.content, detailed=detailed)
        except errors.BadStoreCatalog as exc:
            exc.endpoint = self.endpoint
            exc.request_id = _request_id(resp)
            raise

    def create_image(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Create a ``queued`` image.

        :param meta: the image's fields (name, disk_format, ...).
        :returns: the image as Glance returns it.
        """
        resp = self._request("POST", "/v2/images", json=meta)
        if resp.status_code != 201:
            raise from_response(
                resp, "POST /v2/images", endpoint=self.endpoint
            )
        image: dict[str, Any] = _json(resp, "POST /v2/images")
        return image

    def list_images(self, **filters: str) -> list[dict[str, Any]]:
        """Every image matching ``filters`` (``GET /v2/images`` query
        parameters, e.g. ``status="saving"``), all pages.

        :raises GlanceError: Glance cannot be asked or answers nonsense.
        """
        path = "/v2/images?" + urllib.parse.urlencode(
            {"limit": "200", **filters}
        )
        found: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            resp = self._request("GET", path)
            if resp.status_code != 200:
                raise from_response(
                    resp, "GET /v2/images", endpoint=self.endpoint
                )
            doc = _json(resp, "GET /v2/images")
            if not isinstance(doc, dict) or not isinstance(
                doc.get("images"), list
            ):
                raise errors.GlanceRequestError(
                    "GET /v2/images answered without an images list",
                    endpoint=self.endpoint,
                )
            found.extend(doc["images"])
            nxt = doc.get("next")
            if not nxt:
                return found
            why = _transport.foreign_link(str(nxt), resp.url)
            if why is not None:
                raise errors.GlanceRequestError(
                    f"GET /v2/images answered a next-page link "
                    f"{printable(str(nxt))[:200]!r} that was not followed: "
                    f"{why}; credentials never go to another address",
                    endpoint=self.endpoint,
                )
            path = str(nxt)
        raise errors.GlanceRequestError(
            f"GET /v2/images kept paging past {_MAX_PAGES} pages",
            endpoint=self.endpoint,
        )

    def get_image(self, image_id: str) -> dict[str, Any]:
        """Return one image.

        :raises GlanceRequestError: with ``status_code`` 404 when it is gone.
        """
        what = f"GET /v2/images/{image_id}"
        resp = self._request("GET", f"/v2/images/{image_id}")
        if resp.status_code != 200:
            raise from_response(
                resp, what, endpoint=self.endpoint, image_id=image_id
            )
        image: dict[str, Any] = _json(resp, what)
        return image

    def request_copy(
        self, image_id: str, store_ids: Iterable[str]
    ) -> CopyAnswer:
        """``POST /v2/images/{id}/import`` with the ``copy-image`` method.

        ``all_stores_must_succeed`` is false: with true, a failing store
        reverts the copies made before it, and the stores after it stay
        in ``os_glance_importing_to_stores`` for good (Glance 33).

        :param image_id: an ``active`` image.
        :param store_ids: the stores to copy it to.
        :returns: the answer for 202, 400, 403, 404 and 409.
        :raises GlanceError: 401, 5xx, unreachable or any other answer.
        """
        what = f"POST /v2/images/{image_id}/import"
        resp = self._request(
            "POST",
            f"/v2/images/{image_id}/import",
            json={
                "method": {"name": "copy-image"},
                "stores": list(store_ids),
                "all_stores_must_succeed": False,
            },
        )
        if resp.status_code in (202, 400, 403, 404, 409):
            return CopyAnswer(
                resp.status_code,
                "" if resp.status_code == 202 else _message(resp),
                _request_id(resp),
            )
        raise from_response(
            resp, what, endpoint=self.endpoint, image_id=image_id
        )

    def image_tasks(self, image_id: str) -> list[dict[str, Any]]:
        """The image's import tasks (``GET /v2/images/{id}/tasks``), as
        Glance lists them.  For explanations only: a task's status says
        ``success`` even when every copy failed.

        :raises GlanceError: Glance cannot be asked or refuses.
        """
        what = f"GET /v2/images/{image_id}/tasks"
        resp = self._request("GET", f"/v2/images/{image_id}/tasks")
        if resp.status_code != 200:
            raise from_response(
                resp, what, endpoint=self.endpoint, image_id=image_id
            )
        tasks = _json(resp, what).get("tasks")
        return (
            [t for t in tasks if isinstance(t, dict)]
            if isinstance(tasks, list)
            else []
        )

    def add_location(self, image_id: str, url: str) -> LocationAnswer:
        """``POST /v2/images/{id}/locations`` (Glance 2.17, 2024.2+):
        register data already in a store for a ``queued`` image.

        Glance answers 202 and does the work in a task: it checks the
        location, makes the image ``active`` and, with ``do_secure_hash``,
        computes ``checksum`` and ``os_hash_value`` by reading the data
        itself.  A location it cannot use sends the image back to
        ``queued``; the caller polls the image.

        :returns: the answer for 202 and for the answers that mean "not
            here": 400, 403 (the service role is missing), 404 and 405
            (an older Glance), 409.
        :raises GlanceError: 401, 5xx, unreachable or any other answer.
        """
        what = f"POST /v2/images/{image_id}/locations"
        resp = self._request(
            "POST", f"/v2/images/{image_id}/locations", json={"url": url}
        )
        if resp.status_code in (202, 400, 403, 404, 405, 409):
            return LocationAnswer(
                resp.status_code,
                "" if resp.status_code == 202 else _message(resp),
                _request_id(resp),
            )
        raise from_response(
            resp, what, endpoint=self.endpoint, image_id=image_id
        )

    def with_auth_from_conf(
        self, conf: cfg.ConfigOpts, group: str = config.COPY_GROUP
    ) -> GlanceClient | None:
        """A client for the same Glance (session, endpoint, interface,
        region) with the credentials of ``group``, e.g.
        ``[volume_image_copy]`` for co-location's copies.

        :returns: None when ``group`` sets no ``auth_type``.
        :raises GlanceAuthError: the group's auth options are incomplete.
        """
        try:
            auth = ks_loading.load_auth_from_conf_options(conf, group)
        except ks_exc.ClientException as exc:
            raise _translate(exc, f"load the [{group}] options") from exc
        if auth is None:
            return None
        base = self.adapter
        adapter = ks_adapter.Adapter(
            base.session,
            auth=auth,
            service_type=base.service_type or "image",
            interface=base.interface,
            region_name=base.region_name,
            # the upload's Glance, whatever the copy user's catalog says
            endpoint_override=self.endpoint,
            connect_retries=base.connect_retries,
            global_request_id=getattr(base, "global_request_id", None),
        )
        return GlanceClient(
            adapter,
            use_store_detail=self._use_detail,
            max_response_bytes=self._max_bytes,
            request_timeout=self._request_timeout,
            answer_deadline=self._answer_deadline,
        )

    def delete_image(self, image_id: str) -> bool:
        """Delete an image.

        :returns: True if deleted, False if it was already gone.
        """
        what = f"DELETE /v2/images/{image_id}"
        resp = self._request("DELETE", f"/v2/images/{image_id}")
        if resp.status_code == 404 or _deleted_already(resp):
            return False
        if resp.status_code not in (200, 204):
            raise from_response(
                resp, what, endpoint=self.endpoint, image_id=image_id
            )
        return True

    def upload_image_data(
        self,
        image_id: str,
        body: SizedBody | Iterable[bytes],
        size: int,
        *,
        store_id: str | None,
        timeout: tuple[float, float],
        base_image_ref: str | None = None,
    ) -> None:
        """``PUT /v2/images/{id}/file`` once, with a known size.

        The request is never retried or re-authenticated here: the body is
        a one-shot stream, and the caller decides whether to reopen it.

        :param image_id: a ``queued`` image.
        :param body: the bytes, with ``len(body) == size``.
        :param size: the number of bytes.
        :param store_id: the store header, or None for the default store.
        :param timeout: (connect, per-read) seconds.
        :param base_image_ref: the image the volume was created from, sent
            as ``x-openstack-base-image-ref`` as Cinder sends it.
        :raises VolumeImageError: the error for Glance's answer.
        """
        headers = {
            "Content-Type": "application/octet-stream",
            "x-openstack-image-size": str(size),
        }
        if store_id is not None:
            headers[stores.STORE_HEADER] = store_id
        if base_image_ref is not None:
            headers["x-openstack-base-image-ref"] = base_image_ref
        what = f"PUT /v2/images/{image_id}/file"
        resp = self._request(
            "PUT",
            f"/v2/images/{image_id}/file",
            headers=headers,
            data=body,
            timeout=timeout,
            # keystoneauth would resend the half-read body on these
            connect_retries=0,
            status_code_retries=0,
            allow_reauth=False,
            # its timeouts are per socket operation, its answer is timed
            # from the last byte sent
            data_flow=True,
        )
        if resp.status_code not in (200, 204):
            raise from_response(
                resp,
                what,
                endpoint=self.endpoint,
                store_id=store_id,
                image_id=image_id,
            )


def _deleted_already(resp: requests.Response) -> bool:
    """Glance's answer to a DELETE that another one won: 400 "Image
    status transition from deleted to deleted is not allowed".
    """
    return resp.status_code == 400 and "deleted to deleted" in resp.text


def _translate(
    exc: Exception, what: str, endpoint: str | None = None
) -> errors.VolumeImageError:
    """Map a keystoneauth1 or requests exception to ours."""
    if isinstance(exc, ks_exc.HttpError):
        # raised by auth plugins talking to Keystone
        status = exc.http_status
        cls: type[errors.GlanceError] = (
            errors.GlanceAuthError
            if status in (401, 403)
            else errors.GlanceUnavailable
        )
        # keystoneauth's message repeats the status and request id
        detail = _transport.keystone_detail(exc)
        if _transport.is_outage(status):
            return errors.GlanceUnavailable(
                f"Keystone is unavailable: it answered {status} ({detail}) "
                f"while a token was requested to {what}; retry later",
                status_code=status,
                request_id=exc.request_id,
                endpoint=endpoint,
            )
        return cls(
            f"Keystone refused the authentication ({status}: {detail}) "
            f"while trying to {what}: check the user, password, project "
            "and domains, or the token",
            status_code=status,
            request_id=exc.request_id,
            endpoint=endpoint,
        )
    if isinstance(
        exc,
        ks_exc.AuthorizationFailure
        | ks_exc.MissingAuthPlugin
        | ks_exc.auth_plugins.AuthPluginException
        | ks_exc.NoMatchingPlugin,
    ):
        return errors.GlanceAuthError(
            f"cannot authenticate to {what}: {exc}", endpoint=endpoint
        )
    if isinstance(exc, ks_exc.EndpointNotFound | ks_exc.CatalogException):
        return errors.GlanceError(
            f"no Glance endpoint to {what}: {exc}. Set [glance] "
            "endpoint_override, or check the service catalog, interface "
            "and region",
            endpoint=endpoint,
        )
    # refused, reset, timed out, TLS: the service cannot be asked now
    failure = _transport.describe_failure(exc)
    unavailable = errors.GlanceUnavailable(
        f"Glance is unavailable: {what} failed: {failure}",
        endpoint=endpoint,
    )
    unavailable.timed_out = failure == "timed out"
    return unavailable


def _out_of_time(what: str, endpoint: str | None) -> errors.GlanceUnavailable:
    """The operation's deadline passed before ``what`` could be sent."""
    exc = errors.GlanceUnavailable(
        f"Glance is unavailable: gave up before {what}: the operation "
        "took longer than its deadline ([volume_image] operation_deadline)",
        endpoint=endpoint,
    )
    exc.timed_out = True
    return exc


def _translate_auth(
    exc: Exception, what: str, endpoint: str | None
) -> errors.VolumeImageError:
    """A failure while getting a token: Keystone's, named as such."""
    if isinstance(exc, ks_exc.HttpError):
        return _translate(exc, what, endpoint)
    if isinstance(
        exc, ks_exc.ConnectionError | requests.ConnectionError
    ) or isinstance(exc, ks_exc.RequestTimeout | requests.Timeout):
        return errors.GlanceUnavailable(
            f"Keystone is unavailable: getting a token to {what} failed: "
            f"{_transport.describe_failure(exc)}; check the auth URL",
            endpoint=endpoint,
        )
    return _translate(exc, what, endpoint)
