"""Migrations that rewrite stored data: existing session keys become their keyed hash."""

import importlib
from collections import Counter

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from chat.visitors import visitor_hash

BEFORE = [("chat", "0001_initial"), ("billing", "0005_usage_channel")]
AFTER = [("chat", "0002_visitor_hash"), ("billing", "0006_visitor_hash")]


@pytest.fixture(autouse=True)
def migrated_database(request):
    if request.config.getvalue("nomigrations"):  # make mutate
        pytest.skip("the test database was built from the models (--no-migrations): no migration to go back to")


@pytest.mark.django_db(transaction=True)
def test_it_replaces_stored_session_keys_by_their_hash():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    Conversation, UsageRecord = apps.get_model("chat", "Conversation"), apps.get_model("billing", "UsageRecord")
    key = "abcdefghijklmnopqrstuvwxyz012345"
    Conversation.objects.create(session_key=key, title="anonymous")
    Conversation.objects.create(session_key="", title="a user's")
    now = timezone.now()
    UsageRecord.objects.create(session_key=key, model="m", status="completed", started=now, finished=now)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    apps = executor.loader.project_state(AFTER).apps
    Conversation, UsageRecord = apps.get_model("chat", "Conversation"), apps.get_model("billing", "UsageRecord")
    assert sorted(Conversation.objects.values_list("visitor", flat=True)) == ["", visitor_hash(key)]
    assert list(UsageRecord.objects.values_list("visitor", flat=True)) == [visitor_hash(key)]
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_it_hashes_many_keys_in_batches_and_migrates_back(monkeypatch):
    for name in ("chat.migrations.0002_visitor_hash", "billing.migrations.0006_visitor_hash"):
        monkeypatch.setattr(importlib.import_module(name), "BATCH", 3)  # 7 keys: batches of 3, 3 and 1
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    Conversation, UsageRecord = apps.get_model("chat", "Conversation"), apps.get_model("billing", "UsageRecord")
    keys = [f"session{i:02d}" + "k" * 25 for i in range(7)]
    now = timezone.now()
    for i, key in enumerate(keys):
        for n in range(i + 1):  # key i owns i + 1 rows
            Conversation.objects.create(session_key=key, title=f"{i}.{n}")
            UsageRecord.objects.create(session_key=key, model="m", status="completed", started=now, finished=now)
    Conversation.objects.create(session_key="", title="a user's")
    UsageRecord.objects.create(session_key="", model="m", status="completed", started=now, finished=now)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    apps = executor.loader.project_state(AFTER).apps
    Conversation, UsageRecord = apps.get_model("chat", "Conversation"), apps.get_model("billing", "UsageRecord")
    expected = {visitor_hash(key): i + 1 for i, key in enumerate(keys)} | {"": 1}
    for model in (Conversation, UsageRecord):
        assert Counter(model.objects.values_list("visitor", flat=True)) == expected
    titles = dict(Conversation.objects.values_list("title", "visitor"))
    assert titles["6.3"] == visitor_hash(keys[6]) and titles["a user's"] == ""

    # Back again: reversible as before (the keys cannot be recovered from their hashes: the column comes back empty).
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    assert set(apps.get_model("chat", "Conversation").objects.values_list("session_key", flat=True)) == {""}
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
