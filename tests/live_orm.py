"""Point this test process's ORM at a live server's SQLite file (the browser and API suites)."""

import contextlib
from decimal import Decimal

import pytest


@contextlib.contextmanager
def live_database(path, django_db_blocker, prices):
    """Read and write the live server's database at `path` here, with `prices` ({model: (input, output)}) in place."""
    from django.db import connections

    from billing.models import ModelPrice

    monkeypatch = pytest.MonkeyPatch()
    # Playwright and the SDK's async tests keep an event loop running in this thread; the ORM calls
    # here are plain blocking calls between steps, which is what this switch allows.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    connection = connections["default"]
    original = connection.settings_dict["NAME"]
    # Closing an in-memory test database would destroy it (Django ignores the request): set its
    # connection aside instead, and put it back after.
    kept = connection.connection if connection.is_in_memory_db() else None
    if kept is not None:
        connection.connection = None
    else:
        connection.close()
    connection.settings_dict["NAME"] = str(path)
    try:
        with django_db_blocker.unblock():
            for model, (input_rate, output_rate) in prices.items():
                ModelPrice.objects.get_or_create(
                    model=model,
                    defaults={"input_per_mtok": Decimal(input_rate), "output_per_mtok": Decimal(output_rate)},
                )
            yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original
        if kept is not None:
            connection.connection = kept
        monkeypatch.undo()
