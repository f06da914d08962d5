"""A WSGI filter for cinder-api's paste pipeline that checks every write
of ``image_service:`` extra specs before Cinder stores it.

Deploy it without touching Cinder's code, in ``api-paste.ini``::

    [filter:store_validation]
    paste.filter_factory = volume_image.api.middleware:filter_factory
    config_file = /etc/cinder/volume_image.conf

    [composite:openstack_volume_api_v3]
    use = call:cinder.api.middleware.auth:pipeline_factory
    noauth = ... noauth store_validation apiv3
    keystone = ... authtoken keystonecontext store_validation apiv3

Right before ``apiv3``: after authentication, so an anonymous caller
never makes us ask Glance.  The filter answers its own errors as Cinder's
API does (its fault body; ``OpenStack-API-Version`` and ``Vary`` for the
version asked; ``x-openstack-request-id`` and ``x-compute-request-id``
with the id Cinder's ``request_id`` filter set), so its place relative to
``faultwrap`` does not matter, and ``cinder`` prints the Request-ID that
the refusal's log line carries.

Paste options (all optional):

``config_file``
    An oslo.config file with our ``[glance]`` and ``[volume_image]``
    groups: keystoneauth1 service credentials, cache TTL, ``fail_open``.
``glance_endpoint``
    Glance's URL; sets ``[glance] endpoint_override``.
``forward_token``
    ``true``: ask Glance with the caller's ``X-Auth-Token`` instead of the
    service credentials; Glance's endpoint is ``glance_endpoint`` or, if
    unset, the one the caller's service catalog lists
    (``X-Service-Catalog``, set by keystonemiddleware), for ``[glance]
    valid_interfaces`` (default public) and ``region_name``.
``api_timeout``, ``fail_open``, ``store_cache_ttl``, ``use_store_detail``
    Override the ``[volume_image]`` options of the same name.

Intercepted, with or without a project id in the path::

    POST /v3/{project_id}/types                         volume_type.extra_specs
    PUT  /v3/{project_id}/types/{type_id}               volume_type.extra_specs
    POST /v3/{project_id}/types/{type_id}/extra_specs   extra_specs
    PUT  /v3/{project_id}/types/{type_id}/extra_specs/{key}   {key: value}

Everything else passes untouched.  A body that is not JSON, or not of the
shape above, is passed on for Cinder to reject with its own message.
"""

from __future__ import annotations

import contextvars
import http
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import plugin
from keystoneauth1.access import service_catalog
from oslo_config import cfg
from oslo_utils import strutils

from volume_image import config, errors
from volume_image.api import hook
from volume_image.clients import glance

__all__ = ["StoreValidationFilter", "filter_factory"]

LOG = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# PATH_INFO inside cinder's /v3 composite (the prefix is optional so the
# filter also works in a pipeline mounted at /).  Routes may end in
# ".json" (Routes' format suffix) or a slash.
_ROUTE = re.compile(
    r"^(?:/v3)?(?:/(?P<project>[^/]+))?/types"
    r"(?:/(?P<type_id>[^/]+?)"
    r"(?P<specs>/extra_specs(?:/(?P<key>[^/]+?))?)?)?"
    r"(?:\.json)?/?$"
)

# More than Cinder's own sizelimit default (112 KiB): a body this large is
# refused by Cinder anyway, and reading it must not cost unbounded memory
MAX_BODY = 1024 * 1024

# Cinder's fault names (cinder.api.openstack.wsgi.Fault)
_FAULT_NAMES = {
    400: "badRequest",
    403: "forbidden",
    413: "overLimit",
    503: "serviceUnavailable",
}

_PASTE_OPTIONS = {
    "api_timeout",
    "fail_open",
    "store_cache_ttl",
    "use_store_detail",
}


class StoreValidationFilter:
    """Answer 400 (or 503) for extra-spec writes our hook refuses.

    :param app: the next WSGI application.
    :param hook: the validation hook.
    :param caller_var: when given, the caller's token and service catalog
        are put here for the duration of the check (``forward_token``).
    """

    def __init__(
        self,
        app: WSGIApp,
        hook: hook.ExtraSpecsHook,
        *,
        caller_var: contextvars.ContextVar[_Caller | None] | None = None,
    ) -> None:
        self.app = app
        self.hook = hook
        self.caller_var = caller_var

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """Check the request if it writes extra specs, then pass it on."""
        method = environ.get("REQUEST_METHOD")
        if method not in ("POST", "PUT"):
            return self.app(environ, start_response)
        match = _ROUTE.match(environ.get("PATH_INFO", ""))
        if match is None:
            return self.app(environ, start_response)
        kind = _route_kind(method, match)
        if kind is None:
            return self.app(environ, start_response)
        length = _content_length(environ)
        if length <= 0 and not _body_readable(environ):
            # no body, or chunked on a server that does not end the
            # input: Cinder (webob) cannot read it either, so nothing
            # can be stored
            return self.app(environ, start_response)
        if length <= 0:
            # no Content-Length, but the server ends the input (mod_wsgi
            # with chunked requests, gunicorn): webob reads it, so must we
            body = environ["wsgi.input"].read(MAX_BODY + 1)
            length = len(body)
        elif length <= MAX_BODY:
            body = environ["wsgi.input"].read(length)
        if length > MAX_BODY:
            try:
                version = _api_version(environ)
            except _VersionRefused:
                version = None
            return _fault(
                start_response,
                413,
                f"request body of {length} bytes or more is larger than "
                f"the {MAX_BODY} bytes an extra-spec write may have",
                environ=environ,
                version=version,
            )
        # Cinder reads the body after us: hand it the same bytes
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        extra_specs = _extra_specs(kind, body)
        if extra_specs is None:
            return self.app(environ, start_response)
        try:
            version = _api_version(environ)
        except _VersionRefused:
            # Cinder answers 400 or 406 for the version itself, and
            # stores nothing
            return self.app(environ, start_response)
        try:
            self._check(environ, extra_specs)
        except errors.VolumeImageError as exc:
            LOG.info(
                "refused %s %s (request %s): %s",
                method,
                environ.get("PATH_INFO"),
                _request_id(environ) or "-",
                exc.details(),
            )
            return _fault(
                start_response,
                exc.api_status,
                _public(exc),
                environ=environ,
                version=version,
            )
        return self.app(environ, start_response)

    def _check(
        self, environ: dict[str, Any], extra_specs: Mapping[str, Any]
    ) -> None:
        if self.caller_var is None:
            self.hook.check(extra_specs)
            return
        reset = self.caller_var.set(_Caller(environ))
        try:
            self.hook.check(extra_specs)
        finally:
            self.caller_var.reset(reset)


def _public(exc: errors.VolumeImageError) -> str:
    """The error for the API's caller: without Glance's internal endpoint
    (the log line above has it), with Glance's request id if any.
    """
    text = str(exc)
    if exc.request_id:
        text += f" (Glance request id {exc.request_id})"
    return text


def _route_kind(method: str, match: re.Match[str]) -> str | None:
    """Which body shape a write has, or None for other requests."""
    type_id, has_specs, key = match.group("type_id", "specs", "key")
    if type_id is None:
        return "type" if method == "POST" else None
    if not has_specs:
        return "type" if method == "PUT" else None
    if key is None:
        return "specs" if method == "POST" else None
    return "key" if method == "PUT" else None


def _extra_specs(kind: str, body: bytes) -> Mapping[str, Any] | None:
    """The extra specs a request body writes, or None when the body is
    not of the shape Cinder accepts (Cinder then rejects it itself).
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError; too deep
        return None
    if not isinstance(doc, dict):
        return None
    if kind == "type":
        vtype = doc.get("volume_type")
        if not isinstance(vtype, dict):
            return None
        doc = vtype.get("extra_specs")
    elif kind == "specs":
        doc = doc.get("extra_specs")
    # kind "key": the body is {key: value}; Cinder refuses it unless the
    # key is the URL's, so checking the body checks what is stored
    return doc if isinstance(doc, dict) else None


class _VersionRefused(Exception):
    """Cinder refuses the request's API version itself."""


#: Cinder's volume API: the version asked for without the header
_MIN_VERSION = "3.0"
_VERSION = re.compile(r"^\d+\.\d+$")
_SERVICE = "volume"


def _api_version(environ: Mapping[str, Any]) -> str | None:
    """What Cinder's API answers in ``OpenStack-API-Version`` for this
    request (``volume 3.59``), or None for no header.

    Inside cinder-api, Cinder's own ``Request.set_api_version_request``
    decides; elsewhere the header is read by the same rules (``latest``
    then gives no header: the maximum is Cinder's to know).

    :raises _VersionRefused: Cinder answers 400 or 406 for the version.
    """
    try:
        from cinder import exception as cinder_exception
        from cinder.api.openstack import wsgi as cinder_wsgi
    except ImportError:
        return _parsed_version(environ.get("HTTP_OPENSTACK_API_VERSION"))
    # a copy: Cinder's own Request reads the same environ later
    req = cinder_wsgi.Request(dict(environ))
    try:
        req.set_api_version_request(req.url)
    except (cinder_exception.CinderException, ValueError) as exc:
        raise _VersionRefused from exc
    if cinder_wsgi._is_legacy_endpoint(req):
        return None
    return (
        f"{cinder_wsgi.VOLUME_SERVICE} {req.api_version_request.get_string()}"
    )


def _parsed_version(header: str | None) -> str | None:
    if header is None:
        return f"{_SERVICE} {_MIN_VERSION}"
    for item in header.split(","):
        words = item.split()
        if len(words) == 2 and words[0] == _SERVICE:
            if _VERSION.match(words[1]):
                return f"{_SERVICE} {words[1]}"
            return None
    return None


def _request_id(environ: Mapping[str, Any]) -> str | None:
    """The request id of Cinder's fault answers: its request context's
    (``x-compute-request-id``), which is the one Cinder's ``request_id``
    filter made (``openstack.request_id``).
    """
    context = environ.get("cinder.context")
    request_id = getattr(context, "request_id", None)
    return request_id or environ.get("openstack.request_id")


def _fault(
    start_response: StartResponse,
    status: int,
    message: str,
    *,
    environ: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> list[bytes]:
    """Answer the way Cinder's ``Fault`` does: its body, the version
    headers, and the request id headers (``x-openstack-request-id`` is
    also added by the ``request_id`` filter on the way out, if missing).
    """
    name = _FAULT_NAMES.get(status, "computeFault")
    payload = json.dumps({name: {"code": status, "message": message}}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
    ]
    if version is not None:
        headers += [("OpenStack-API-Version", version)]
        headers += [("Vary", "OpenStack-API-Version")]
    environ = environ or {}
    if environ.get("openstack.request_id"):
        headers += [
            ("x-openstack-request-id", environ["openstack.request_id"])
        ]
    request_id = _request_id(environ)
    if request_id:
        headers += [("x-compute-request-id", request_id)]
    start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
    return [payload]


class _Caller:
    """What the current request carries: its token and the service
    catalog keystonemiddleware put in ``X-Service-Catalog``.
    """

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.token: str | None = environ.get("HTTP_X_AUTH_TOKEN")
        self.catalog: str | None = environ.get("HTTP_X_SERVICE_CATALOG")


class _ForwardedToken(plugin.BaseAuthPlugin):
    """Auth with whatever token the current request carries; the Glance
    endpoint comes from ``[glance] endpoint_override`` or, failing that,
    from the caller's service catalog.
    """

    def __init__(self, caller_var: contextvars.ContextVar[_Caller | None]):
        super().__init__()
        self._var = caller_var

    def get_token(self, session: Any, **kwargs: Any) -> str | None:
        caller = self._var.get()
        return caller.token if caller else None

    def get_endpoint(self, session: Any, **kwargs: Any) -> str | None:
        caller = self._var.get()
        if caller is None or not caller.catalog:
            return None
        try:
            # keystonemiddleware writes the catalog in the v2 format
            catalog = service_catalog.ServiceCatalogV2(
                json.loads(caller.catalog)
            )
            url = catalog.url_for(
                service_type=kwargs.get("service_type") or "image",
                interface=kwargs.get("interface") or "public",
                region_name=kwargs.get("region_name"),
            )
        except (ValueError, TypeError, ks_exc.EndpointNotFound):
            return None
        return str(url) if url else None


def _load_conf(local_conf: Mapping[str, str]) -> cfg.ConfigOpts:
    unknown = (
        set(local_conf)
        - _PASTE_OPTIONS
        - {
            "config_file",
            "glance_endpoint",
            "forward_token",
        }
    )
    if unknown:
        raise ValueError(
            "unknown store_validation paste option(s): "
            + ", ".join(sorted(unknown))
        )
    files = [local_conf["config_file"]] if "config_file" in local_conf else []
    conf = config.load(files)
    if "glance_endpoint" in local_conf:
        conf.set_override(
            "endpoint_override",
            local_conf["glance_endpoint"],
            group=config.GLANCE_GROUP,
        )
    for name in _PASTE_OPTIONS & set(local_conf):
        conf.set_override(name, local_conf[name], group=config.GROUP)
    return conf


def filter_factory(
    global_conf: Mapping[str, str], **local_conf: str
) -> Callable[[WSGIApp], StoreValidationFilter]:
    """The ``paste.filter_factory`` entry point (see the module doc).

    :raises ValueError: an unknown paste option (a typo must not leave the
        filter running with defaults).
    :raises VolumeImageError: the ``[glance]`` options are unusable.
    """
    conf = _load_conf(local_conf)
    forward = strutils.bool_from_string(
        local_conf.get("forward_token", "false"), strict=True
    )
    caller_var: contextvars.ContextVar[_Caller | None] | None = None
    client = None
    if forward:
        caller_var = contextvars.ContextVar(
            "volume_image_caller", default=None
        )
        client = glance.GlanceClient.from_conf(
            conf,
            auth=_ForwardedToken(caller_var),
            request_timeout=conf[config.GROUP].api_timeout,
        )
    checker = hook.ExtraSpecsHook.from_conf(conf, client=client)

    def _filter(app: WSGIApp) -> StoreValidationFilter:
        return StoreValidationFilter(app, checker, caller_var=caller_var)

    return _filter


def _content_length(environ: Mapping[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _body_readable(environ: Mapping[str, Any]) -> bool:
    """webob's ``Request.is_body_readable``, which decides whether Cinder
    reads the body: a Content-Length other than 0, or, without one, the
    server's ``wsgi.input_terminated`` or else the older
    ``webob.is_body_readable`` flag.
    """
    raw = environ.get("CONTENT_LENGTH")
    try:
        length = int(raw) if raw else None
    except ValueError:
        length = None
    if length is not None:
        return length != 0
    return bool(
        environ.get(
            "wsgi.input_terminated",
            environ.get("webob.is_body_readable", False),
        )
    )
