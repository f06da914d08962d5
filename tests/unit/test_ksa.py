"""The keystoneauth1 boundary shared by the Glance and block-storage
clients.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests
import requests_mock

from volume_image.clients import _transport as _ksa
from volume_image.clients import glance

from .conftest import URL

DETAIL = Path(__file__).parent.parent / "data" / "stores-detail-glance33.json"


def test_an_answer_keystoneauth_logged_is_still_read(
    client: glance.GlanceClient,
    rmock: requests_mock.Mocker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG (``--debug``, or ``openstack``'s logging) keystoneauth1
    reads a JSON body to log it, before the caller streams it.
    """
    caplog.set_level(logging.DEBUG, logger="keystoneauth")
    rmock.get(
        f"{URL}/v2/info/stores/detail",
        content=DETAIL.read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    catalog = client.get_store_catalog()
    assert [s.id for s in catalog.stores] == ["fast", "cheap", "web"]
    assert "Cheap local file store" in caplog.text  # keystoneauth read it


def test_a_body_read_before_still_counts_against_the_cap() -> None:
    resp = requests.Response()
    resp._content = b"x" * 10
    resp._content_consumed = True
    _ksa.read_capped(resp, 10)
    assert resp.content == b"x" * 10
    with pytest.raises(_ksa.TooLarge):
        _ksa.read_capped(resp, 9)
