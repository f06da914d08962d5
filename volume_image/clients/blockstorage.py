"""Read volume types from a block-storage API (Cinder) for ``audit``.

The only module that talks to Cinder; its exceptions become
:class:`~volume_image.errors.BlockStorageError` here.
"""

from __future__ import annotations

from typing import Any

import requests
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exc

from volume_image import errors
from volume_image.clients import _transport
from volume_image.core.text import printable

__all__ = ["list_volume_types"]

#: the official service type; keystoneauth also matches its aliases
#: (volumev3, volume) in the service catalog
SERVICE_TYPE = "block-storage"

# Pages are followed through volume_types_links; this bounds a server that
# keeps answering with the same "next" link
_MAX_PAGES = 1000


def list_volume_types(
    adapter: ks_adapter.Adapter,
    *,
    max_response_bytes: int = 16 * 1024 * 1024,
    answer_deadline: float = _transport.DEFAULT_ANSWER_DEADLINE,
) -> dict[str, Any]:
    """Every volume type, public and private, with its extra specs.

    Needs a role that may list private types (admin); others see only
    the public ones.

    :param adapter: an adapter for the block-storage API; its endpoint is
        the API root with the project, e.g. ``https://cinder/v3/PROJECT``.
    :returns: ``{"volume_types": [...]}`` as the API answers it, all
        pages joined.
    :raises BlockStorageError: the API cannot be asked or refused.
    """
    _authenticate(adapter)
    endpoint = _transport.endpoint_of(adapter)
    url = "/types?is_public=None"
    types: list[Any] = []
    for _ in range(_MAX_PAGES):
        doc, page_url = _get(
            adapter, url, endpoint, max_response_bytes, answer_deadline
        )
        page = doc.get("volume_types") if isinstance(doc, dict) else None
        if not isinstance(page, list):
            raise errors.BlockStorageError(
                f"GET {url} answered without a volume_types list",
                endpoint=endpoint,
            )
        types.extend(page)
        next_url = _next_link(doc)
        if next_url is None:
            return {"volume_types": types}
        why = _transport.foreign_link(next_url, page_url)
        if why is not None:
            raise errors.BlockStorageError(
                f"GET {url} answered a next-page link "
                f"{printable(next_url)[:200]!r} that was not followed: {why}; "
                "credentials never go to another address",
                endpoint=endpoint,
            )
        url = next_url
    raise errors.BlockStorageError(
        f"GET /types kept paging past {_MAX_PAGES} pages",
        endpoint=endpoint,
    )


def _authenticate(adapter: ks_adapter.Adapter) -> None:
    """Get a token first, on its own: a Keystone failure is then reported
    as Keystone's, never as the block-storage API's.  The auth plugin
    caches the token, so this costs no request while it is valid.
    """
    auth = adapter.auth or adapter.session.auth
    if auth is None:
        return
    what = "getting a token to list volume types"
    try:
        adapter.get_token()
    except ks_exc.HttpError as exc:
        status = exc.http_status
        detail = _transport.keystone_detail(exc)
        if _transport.is_outage(status):
            text = f"Keystone is unavailable: {what}: it answered {status}"
        else:
            text = f"Keystone refused {what} ({status})"
            if status in (401, 403):
                text += "; check the user, password, project and domains"
        raise errors.BlockStorageError(
            f"{text}: {detail}", status_code=status
        ) from exc
    except (
        ks_exc.ConnectionError,
        ks_exc.RequestTimeout,
        requests.RequestException,
    ) as exc:
        raise errors.BlockStorageError(
            f"Keystone is unavailable: {what} failed: "
            f"{_transport.describe_failure(exc)}; check the auth URL"
        ) from exc
    except ks_exc.ClientException as exc:
        raise errors.BlockStorageError(
            f"cannot authenticate: {what}: {exc}"
        ) from exc


def _next_link(doc: dict[str, Any]) -> str | None:
    for link in doc.get("volume_types_links") or []:
        if isinstance(link, dict) and link.get("rel") == "next":
            href = link.get("href")
            return str(href) if href else None
    return None


def _get(
    adapter: ks_adapter.Adapter,
    url: str,
    endpoint: str | None,
    cap: int,
    answer_deadline: float,
) -> tuple[Any, str]:
    """The JSON of one page, and the URL that answered it."""
    try:
        resp = _transport.send(
            adapter,
            "GET",
            url,
            headers={"Accept": "application/json"},
            cap=cap,
            answer_deadline=answer_deadline,
        )
    except _transport.OutOfTime as exc:
        raise errors.BlockStorageError(
            f"gave up before GET {url}: the operation took longer than its "
            "deadline ([volume_image] operation_deadline)",
            endpoint=endpoint,
        ) from exc
    except _transport.TooSlow as exc:
        raise errors.BlockStorageError(
            f"the block-storage API is unavailable: GET {url}: its answer "
            "did not arrive whole in time",
            endpoint=endpoint,
        ) from exc
    except _transport.TooLarge as exc:
        raise errors.BlockStorageError(
            f"GET {url}: the answer is longer than {cap} bytes "
            "([volume_image] max_response_bytes); it was not read further",
            endpoint=endpoint,
        ) from exc
    except (
        ks_exc.EndpointNotFound,
        ks_exc.CatalogException,
        ks_exc.MissingAuthPlugin,
    ) as exc:
        raise errors.BlockStorageError(
            f"no block-storage endpoint to ask: {exc}. Give "
            "--block-storage-endpoint, or credentials whose service catalog "
            "lists block-storage (check the interface and region)",
        ) from exc
    except (ks_exc.HttpError, ks_exc.AuthorizationFailure) as exc:
        # raised by the auth plugin while it talks to Keystone
        raise errors.BlockStorageError(
            f"cannot authenticate to list volume types: {exc}",
            endpoint=endpoint,
        ) from exc
    except (ks_exc.ClientException, OSError) as exc:
        raise errors.BlockStorageError(
            f"the block-storage API is unavailable: GET {url} failed: "
            f"{_transport.describe_failure(exc)}",
            endpoint=endpoint,
        ) from exc
    what = f"GET {url}"
    if 300 <= resp.status_code < 400:
        raise errors.BlockStorageError(
            f"{what} answered {resp.status_code}, a redirect to "
            f"{resp.headers.get('Location') or '(no Location)'}; it was not "
            "followed, so that credentials never go to another address",
            status_code=resp.status_code,
            endpoint=endpoint,
        )
    if resp.status_code != 200:
        hint = (
            ". Listing all volume types needs the admin role"
            if resp.status_code in (401, 403)
            else ""
        )
        raise errors.BlockStorageError(
            f"{what} answered {resp.status_code}: "
            f"{resp.text.strip()[:300] or resp.reason}{hint}",
            status_code=resp.status_code,
            request_id=resp.headers.get("x-openstack-request-id"),
            endpoint=endpoint,
        )
    try:
        return resp.json(), resp.url
    except ValueError as exc:
        raise errors.BlockStorageError(
            f"{what} answered 200 with a body that is not JSON",
            endpoint=endpoint,
        ) from exc
