"""Real servers for the functional tests, started once per session.

The launcher builds each server's virtualenv on first use (cached under
``$VOLUME_IMAGE_CACHE``); a failing test gets the tail of every server's
log in its report.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from keystoneauth1 import adapter, session

from harness import launcher
from volume_image.clients import glance

_SERVERS: list[launcher.Server] = []


def _start(server: launcher.Server) -> launcher.Server:
    server.start()
    _SERVERS.append(server)
    return server


@pytest.fixture(scope="session")
def glance_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.GlanceServer]:
    """Glance 33: fast (file, default), cheap (file), web (http, read-only).

    One worker: with sqlite, two workers writing the same moment fail
    each other with "database is locked" (HTTP 500) even in WAL mode;
    production Glance runs on MySQL.  Concurrent client uploads still
    overlap on the wire and queue at the server.
    """
    server = launcher.GlanceServer(
        tmp_path_factory.mktemp("glance"), processes=1
    )
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def glance_single(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.GlanceServer]:
    """Glance 33 without enabled_backends (no multi-store)."""
    server = launcher.GlanceServer(
        tmp_path_factory.mktemp("glance-single"), multistore=False, processes=1
    )
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keystone(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.KeystoneServer]:
    """Keystone 30 (fernet, sqlite) with admin, demo (member),
    demo-reader (reader) and the service users glance and cinder.
    """
    server = launcher.KeystoneServer(tmp_path_factory.mktemp("keystone"))
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def glance_keystone(
    keystone: launcher.KeystoneServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.GlanceServer]:
    """Glance 33 behind Keystone (upstream's keystone flavor and RBAC),
    found through the service catalog (type image, RegionOne).

    authtoken's token cache is off, so a revoked token is refused at once.
    Debug logging is on: each line of a request names its user.
    """
    server = launcher.GlanceServer(
        tmp_path_factory.mktemp("glance-keystone"),
        processes=1,
        keystone=keystone,
        token_cache_time=-1,
        # each log line names the request's user and project
        debug=True,
    )
    _start(server)
    keystone.register_service("image", "glance", server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbit(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.RabbitServer]:
    """RabbitMQ (Debian's) with its own epmd, all on 127.0.0.1."""
    server = launcher.RabbitServer(tmp_path_factory.mktemp("rabbit"))
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cinder_stack(
    rabbit: launcher.RabbitServer,
    glance_server: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.CinderStack]:
    """cinder-api + cinder-scheduler + cinder-volume 29 over ``rabbit``,
    asking ``glance_server``.  Backend ``upstream`` runs the test file
    driver as it is; ``ours`` runs it wrapped by volume_image's
    StoreAwareDriver, switched on by its two cinder.conf lines.

    Co-location with the base image is on; it only acts on a volume
    whose glance metadata names an image.

    The API runs upstream's pipeline (no store_validation filter), so a
    test can give a type a store that the filter would refuse, as a type
    made before the filter was installed, or before Glance changed, has.
    Its log tail on failure is mostly cinder-volume's.
    """
    server = launcher.CinderStack(
        tmp_path_factory.mktemp("cinder-stack"),
        glance_server.url,
        # every stack on the shared broker has a vhost of its own
        rabbit.vhost_url("session-stack"),
        ours_driver="volume_image.cinder.driver.StoreAwareDriver",
        ours_wrapped_driver=launcher.FILE_DRIVER,
        with_filter=False,
        sections={
            "volume_image": {
                # test_cinder_volume_real's CAP
                "max_concurrent_uploads": "2",
                # acts only on volumes with a base image (glance metadata)
                "colocate_with_base_image": "true",
            }
        },
    )
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.MariaDBServer]:
    """MariaDB (Debian's 10.11) on 127.0.0.1 with a fresh datadir (made
    in under a second), database ``glance`` and user ``glance``.
    """
    server = launcher.MariaDBServer(tmp_path_factory.mktemp("mariadb"))
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def glance_mariadb(
    mariadb: launcher.MariaDBServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.GlanceServer]:
    """Glance 33 on MariaDB with 4 workers: uploads run side by side
    (sqlite allows one writer, hence one worker in ``glance_server``).
    """
    server = launcher.GlanceServer(
        tmp_path_factory.mktemp("glance-mariadb"),
        processes=4,
        database_url=mariadb.create_database("glance_mariadb"),
    )
    _start(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def glance_ha(
    mariadb: launcher.MariaDBServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.GlanceCluster]:
    """Production-shaped Glance: nodes ``a`` and ``b`` (4 workers each)
    on one MariaDB database and one store directory, behind haproxy
    (round robin, health checks on ``/healthcheck``).

    ``.url`` is haproxy's; ``.nodes``/``.node(name)`` the
    :class:`~harness.launcher.GlanceServer` nodes;
    ``.proxy`` the haproxy (``states()``, ``stats()``, ``admin()``).
    A test that kills or stops a node starts it again before it ends.
    """
    cluster = launcher.GlanceCluster(
        tmp_path_factory.mktemp("glance-ha"),
        mariadb.create_database("glance_ha"),
        nodes=2,
        processes=4,
    )
    cluster.start()
    _SERVERS.extend(cluster.servers)
    yield cluster
    cluster.stop()


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{launcher.free_port()}"


def make_client(
    url: str, headers: dict[str, str] | None = None, retries: int = 0
) -> glance.GlanceClient:
    """A token-less client; ``headers`` can set a devauth identity."""
    sess = session.Session(timeout=30)
    return glance.GlanceClient(
        adapter.Adapter(
            sess,
            endpoint_override=url,
            additional_headers=headers or {},
            connect_retries=retries,
        )
    )


@pytest.fixture
def client(glance_server: launcher.GlanceServer) -> glance.GlanceClient:
    return make_client(glance_server.url)


def count_requests(server: launcher.Server, fragment: str) -> int:
    """How many access-log lines of ``server`` contain ``fragment``."""
    return sum(
        1
        for line in server.log_path.read_text(errors="replace").splitlines()
        if fragment in line and "=>" in line
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    report = yield
    if report.failed:  # type: ignore[attr-defined]
        for server in _SERVERS:
            report.sections.append(  # type: ignore[attr-defined]
                (f"{server.name} log ({server.log_path})", server.log_tail(60))
            )
    return report


def data_dir() -> Path:
    return Path(__file__).parent.parent / "data"
