"""sqlite shared by cinder-api, cinder-scheduler and cinder-volume.

Written as ``sitecustomize.py`` into a directory on the PYTHONPATH of the
processes of harness.launcher.CinderStack (never imported by
the project itself).

oslo.db opens every sqlite transaction with a deferred ``BEGIN``: a
transaction that reads, then writes (cinder's quota reservation, status
updates) fails at once with "database is locked" when another process
holds the write lock meanwhile -- sqlite cannot wait there without a
deadlock, so its busy timeout does not apply.  Test stacks hit this as
soon as two things happen at the same time (a volume created while
another one is being created or uploaded).  ``BEGIN IMMEDIATE`` takes the
write lock up front, so transactions of all processes queue (up to the
busy timeout, 60 s here) instead of failing.  A server database would
not need this; production Cinder never runs on sqlite.
"""

import sqlite3
import sqlite3.dbapi2
from typing import Any


class _Cursor(sqlite3.Cursor):
    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "BEGIN":
            sql = "BEGIN IMMEDIATE"
        return super().execute(sql, *args)


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)


_connect = sqlite3.connect


def _connect_immediate(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("factory", _Connection)
    kwargs.setdefault("timeout", 60.0)
    return _connect(*args, **kwargs)


# SQLAlchemy's pysqlite dialect calls sqlite3.dbapi2.connect
sqlite3.connect = _connect_immediate
sqlite3.dbapi2.connect = _connect_immediate
