"""Migrations that rewrite stored data: existing session keys become their keyed hash."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from chat.visitors import visitor_hash

BEFORE = [("chat", "0001_initial"), ("billing", "0005_usage_channel")]
AFTER = [("chat", "0002_visitor_hash"), ("billing", "0006_visitor_hash")]


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
