"""Shared fixtures: named people, their sessions, websocket connections and the mock upstream."""

import asyncio
import os
from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.cached_db import SessionStore

from chatsite.asgi import application

pytest_plugins = ["tests.mock_fixtures"]


def new_session():
    """Return the key of a fresh, saved anonymous session."""
    store = SessionStore()
    store.create()
    return store.session_key


async def connect(session_key=None, *, origin=b"http://localhost", client=None):
    """Open /ws/chat/ as the browser would (cookie + origin, from `client` = (address, port)); return the communicator."""
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    if client is not None:
        communicator.scope["client"] = list(client)
    # Channels' default is one second; the handshake's session and user lookups queue on the one
    # database thread behind every other socket's, which a loaded machine (or a soak) takes longer over.
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def receive_until_done(communicator, timeout=5):
    """Return every frame up to and including `done` (or the first `error` with no reply)."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == "done":
            return frames


@pytest.fixture
def alice_session(transactional_db):
    return new_session()


@pytest.fixture
def bob_session(transactional_db):
    return new_session()


@pytest.fixture
def asession():
    return database_sync_to_async(new_session)


@pytest.fixture
async def close_reply_hub():
    """After an async test, close the reply hub its loop started (chat/replies.py Hub.close), then cancel
    what else is left on the loop until it ends. The loop's own close cancels each task once, and on Redis
    a cancelled channels-redis receive was seen still retrying inside redis-py (Hub.close), which hung the
    run."""
    yield
    from chat.replies import Hub

    loop = asyncio.get_running_loop()
    hub = Hub._hubs.get(loop)
    if hub is not None:
        await hub.close()
    for _ in range(50):
        left = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task() and not task.done()]
        if not left:
            break
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=0.2)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Under mutmut (make mutate), run the database-free tests first: each mutant's run stops at its first failure.

    pytest-django has put the tests that use the database before the ones that flush it; a stable sort keeps that.
    Every async test gets close_reply_hub.
    """
    for item in items:
        if asyncio.iscoroutinefunction(getattr(item, "obj", None)) and "close_reply_hub" not in item.fixturenames:
            item.fixturenames.insert(0, "close_reply_hub")
    if os.environ.get("MUTANT_UNDER_TEST"):
        items.sort(key=uses_database)


def uses_database(item):
    return bool(item.get_closest_marker("django_db")) or bool(
        {"db", "transactional_db", "live_server"} & set(getattr(item, "fixturenames", ())))


@pytest.fixture(scope="session")
def configured_database_name():
    """The default database's name as configured, read before pytest-django replaces it with the test database's."""
    from django.db import connection

    return connection.settings_dict["NAME"]


@pytest.fixture(scope="session")
def django_db_setup(configured_database_name, django_db_setup, django_db_blocker, request):
    """The test database; built from the models with --no-migrations (make mutate), then seeded as migrated.

    The mutation run creates a database per mutant, and building it from the models takes a seventh
    of the time the migrations take. The data the migrations seed (the default prices) and the triggers
    they create (the dashboard roll-up's) are added here.
    """
    from django.db import connection

    # A session whose tests use no database makes none: then the name is still the configured one, and there is
    # nothing to seed (and no database to touch). Made, it is test_<name> (PostgreSQL) or an in-memory one (SQLite).
    made = connection.settings_dict["NAME"] != configured_database_name
    if made and request.config.getvalue("nomigrations"):
        from django.apps import apps

        with django_db_blocker.unblock():
            import_module("billing.migrations.0002_default_prices").add_prices(apps, None)
            import_module("billing.migrations.0004_cache_writes_and_upstream_cost").add_cache_write_rates(apps, None)
            with connection.schema_editor() as schema_editor:  # the roll-up's staleness triggers
                import_module("billing.migrations.0009_rollup").create_triggers(apps, schema_editor)


@pytest.fixture(scope="session", autouse=True)
def close_connection_pools(django_db_setup, django_db_blocker):
    """Return every connection to PostgreSQL's pool and close it before the test database is dropped."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        # Connections opened by sync_to_async live in asgiref's shared worker thread: close them there.
        asyncio.run(sync_to_async(connections.close_all)())
        for connection in connections.all():
            if connection.vendor == "postgresql":
                connection.close_pool()
