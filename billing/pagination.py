"""A paginator for tables too big to count on every page view."""

from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property

COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """Count at most COUNT_CAP rows; past the cap, use PostgreSQL's row estimate for an unfiltered table."""

    @cached_property
    def count(self):
        """Return the exact count up to the cap, else an estimate (or the cap, so pages past it still link)."""
        capped = self.object_list[: COUNT_CAP + 1].count()
        if capped <= COUNT_CAP:
            return capped
        if not self.object_list.query.where:
            return max(self.estimate(), capped)
        return capped

    def estimate(self):
        """Return the planner's row estimate for the whole table (PostgreSQL), or 0 when unknown."""
        if connection.vendor != "postgresql":
            return 0
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            row = cursor.fetchone()
        return max(row[0], 0) if row else 0
