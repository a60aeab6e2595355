"""The statements a reply's writes run, written once (chatsite/rows.py): the rows they store are save()'s."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import signals
from django.forms.models import model_to_dict
from django.utils import timezone

from billing.models import ModelPrice, UsageRecord
from chat.models import Conversation, Message
from chatsite import rows

pytestmark = pytest.mark.django_db

AUTO = {"id", "created", "updated", "request_id"}


def stored(obj):
    return {k: v for k, v in model_to_dict(type(obj).objects.get(pk=obj.pk)).items() if k not in AUTO}


@pytest.mark.parametrize("model", [Conversation, Message, UsageRecord])
def test_nothing_listens_for_saves_of_the_models_it_writes(model):
    """rows.insert and rows.update send no save signals: a receiver added for these models would miss them."""
    for signal in (signals.pre_save, signals.post_save, signals.pre_init, signals.post_init):
        assert not signal.has_listeners(model), f"{signal} has a receiver for {model.__name__}: use save() there"


def test_it_stores_what_save_stores_and_sets_the_primary_key():
    before = timezone.now()
    saved = Conversation(visitor="v" * 32, title="Hello", model="demo/assistant")
    saved.save()
    inserted = rows.insert([Conversation(visitor="v" * 32, title="Hello", model="demo/assistant")])[0]
    assert inserted.pk is not None and inserted.pk != saved.pk and not inserted._state.adding
    assert stored(inserted) == stored(saved)
    again = Conversation.objects.get(pk=inserted.pk)
    assert before <= again.created <= again.updated <= timezone.now()  # auto_now_add and auto_now, as save() sets them
    assert (again.created, again.updated) == (inserted.created, inserted.updated)

    price = ModelPrice.objects.create(model="test/m", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
                                      effective_from=before - timedelta(days=1))
    fields = dict(visitor="v" * 32, conversation=saved, model="test/m", status="stopped", prompt_tokens=7,
                  completion_tokens=3, price=price, cost_usd=Decimal("0.0000660000"),
                  upstream_cost_usd=Decimal("0.000066123"), ttft_ms=None, error="it – stopped ✓", started=before,
                  finished=before + timedelta(seconds=1))
    saved, inserted = UsageRecord(**fields), UsageRecord(**fields)
    saved.save()
    rows.insert([inserted])
    assert stored(inserted) == stored(saved)
    assert UsageRecord.objects.get(pk=inserted.pk).request_id == inserted.request_id


def test_it_inserts_several_rows_in_one_statement_each_getting_its_own_key_in_order():
    conversation = rows.insert([Conversation(visitor="v" * 32)])[0]
    asked, reply = rows.insert([
        Message(conversation=conversation, role="user", content="Hi"),
        Message(conversation=conversation, role="assistant", status="streaming", model="demo/assistant"),
    ])
    assert asked.pk < reply.pk
    assert Message.objects.get(pk=asked.pk).content == "Hi"
    assert (Message.objects.get(pk=reply.pk).role, Message.objects.get(pk=reply.pk).status) == ("assistant", "streaming")


def test_it_updates_one_row_by_its_key():
    conversation = Conversation.objects.create(visitor="v" * 32)
    one, other = (Message.objects.create(conversation=conversation, role="assistant", status="streaming")
                  for _ in range(2))
    finished = timezone.now()
    assert rows.update(Message, one.pk, content="Done ✓", status="completed", ttft_ms=12, finished=finished) == 1
    one.refresh_from_db()
    other.refresh_from_db()
    assert (one.content, one.status, one.ttft_ms, one.finished) == ("Done ✓", "completed", 12, finished)
    assert (other.content, other.status, other.finished) == ("", "streaming", None)
    assert rows.update(Message, other.pk + 1000, status="failed") == 0
    assert rows.update(Conversation, conversation.pk, model="demo/other") == 1  # a field called `model`
    assert Conversation.objects.get(pk=conversation.pk).model == "demo/other"
