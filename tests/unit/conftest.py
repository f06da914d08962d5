"""Shared unit-test fixtures: a Glance client over requests-mock."""

from collections.abc import Iterator

import pytest
import requests_mock
from keystoneauth1 import adapter, session

from volume_image.clients import glance

URL = "http://glance.test:9292"


@pytest.fixture
def rmock() -> Iterator[requests_mock.Mocker]:
    with requests_mock.Mocker() as mocker:
        yield mocker


@pytest.fixture
def client(rmock: requests_mock.Mocker) -> glance.GlanceClient:
    sess = session.Session(timeout=5)
    return glance.GlanceClient(adapter.Adapter(sess, endpoint_override=URL))


class Clock:
    """A monotonic clock that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
