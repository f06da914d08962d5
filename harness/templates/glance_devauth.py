"""Paste filter for the test Glance: an identity without keystone.

It fills in the identity headers that keystonemiddleware would set, but
only those the request did not send, so a test can still send its own
``X-Roles``/``X-Project-Id`` to exercise Glance's RBAC. Loopback tests only.
"""

from collections.abc import Callable
from typing import Any

_DEFAULTS = {
    "HTTP_X_IDENTITY_STATUS": "Confirmed",
    "HTTP_X_USER_ID": "volume-image-test-user",
    "HTTP_X_PROJECT_ID": "volume-image-test-project",
    "HTTP_X_ROLES": "admin,member,reader",
}


def filter_factory(global_conf: Any, **local_conf: Any) -> Callable[..., Any]:
    def _filter(app: Any) -> Any:
        def middleware(environ: dict[str, Any], start_response: Any) -> Any:
            for key, value in _DEFAULTS.items():
                if (
                    key == "HTTP_X_PROJECT_ID"
                    and "HTTP_X_TENANT_ID" in environ
                ):
                    continue
                environ.setdefault(key, value)
            return app(environ, start_response)

        return middleware

    return _filter
