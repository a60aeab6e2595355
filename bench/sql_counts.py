"""Count the SQL statements Django runs on every connection, including those Channels opens in worker threads."""

import re
import threading

from django.db import connections
from django.db.backends.signals import connection_created

WRITE = re.compile(r'^\s*(INSERT INTO|UPDATE|DELETE FROM)\s+"?(\w+)"?', re.IGNORECASE)


class SqlCounts:
    """Statements run, writes among them, and writes by verb and table: a few microseconds a query."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queries = self.writes = 0
        self.tables = {}

    def __call__(self, execute, sql, params, many, context):
        match = WRITE.match(sql)
        with self.lock:
            self.queries += 1
            if match:
                self.writes += 1
                key = f"{match.group(1).split()[0].upper()} {match.group(2)}"
                self.tables[key] = self.tables.get(key, 0) + 1
        return execute(sql, params, many, context)

    def install(self):
        """Count on this thread's open connections and on every connection opened from now on."""
        connection_created.connect(self._wrap, weak=False)
        for connection in connections.all(initialized_only=True):
            self._wrap(None, connection)
        return self

    def _wrap(self, sender, connection, **kwargs):
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def snapshot(self):
        """Return the counts so far as a plain dict."""
        with self.lock:
            return {"queries": self.queries, "writes": self.writes, "tables": dict(self.tables)}
