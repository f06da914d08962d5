"""cinder-api 29 for gunicorn (see CinderServer(wsgi_server="gunicorn")).

Rendered by harness.launcher. Cinder reads its options from
sys.argv, which under gunicorn holds gunicorn's own: give it uWSGI's
pyargv instead.
"""

import sys

sys.argv = [
    "cinder-api",
    "--config-file",
    "@ETC@/cinder.conf",
    "--log-file",
    "@BASE@/log/cinder-api.log",
]

from cinder.wsgi.api import application  # noqa: E402,F401
