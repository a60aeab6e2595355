"""How a finished reply is written (chat.turns.store) and read back (chat.turns.stored).

The figures are written here, as the relay would hand them over; every expectation is one of them.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import budgets
from billing.models import AbandonmentEvent, ModelPrice, UsageRecord
from chat.models import Conversation, Message
from chat.providers import Call, Usage
from chat.turns import Outcome, Stored, Turn, store, stored
from tests.billing.conftest import make_record

VISITOR = "v" * 32


def streaming_reply():
    conversation = Conversation.objects.create(visitor=VISITOR)
    return Message.objects.create(conversation=conversation, role="assistant", content="", status="streaming")


def turn_of(message, **call_fields):
    call = Call(model="openai/gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}], **call_fields)
    return Turn(conversation_id=message.conversation_id, message_id=message.pk, call=call,
                started=timezone.now() - timedelta(seconds=2), history_dropped=0, user_id=None, visitor=VISITOR,
                title="", shows_usage=False)


@pytest.mark.django_db
def test_it_writes_the_reply_and_its_one_usage_record_with_the_same_figures():
    message = streaming_reply()
    turn = turn_of(message, usage=Usage(prompt_tokens=12, completion_tokens=3))
    result = store(turn, Outcome(text="Hello there", reason="", error="", ttft_ms=150, duration_ms=900, delivered=2))
    message.refresh_from_db()
    record = UsageRecord.objects.get()
    assert (message.content, message.status, message.ttft_ms) == ("Hello there", "completed", 150)
    assert message.finished is not None and message.finished == record.finished
    assert (record.conversation_id, record.message_id, record.status, record.ttft_ms, record.duration_ms) == (
        message.conversation_id, message.pk, "completed", 150, 900)
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (12, 3, False)
    assert result == Stored(message.pk, "completed", "Hello there", record, False)


@pytest.mark.django_db
@pytest.mark.parametrize(("ttft_ms", "left_streaming", "phase"), [
    (150, None, "streaming"), (None, None, "before_first_token"),
    # The person left (and did not come back) at a point the relay knows better than the reply's end.
    (150, False, "before_first_token"), (None, True, "streaming"),
])
def test_it_records_the_phase_a_person_left_in(ttft_ms, left_streaming, phase):
    message = streaming_reply()
    outcome = Outcome(text="Hel", reason="disconnect", error="", ttft_ms=ttft_ms, duration_ms=900, delivered=1,
                      left_ms=400, left_streaming=left_streaming)
    store(turn_of(message, usage=Usage(prompt_tokens=12, completion_tokens=1)), outcome)
    event = AbandonmentEvent.objects.get()
    assert (event.reason, event.phase, event.tokens_delivered, event.elapsed_ms) == ("disconnect", phase, 1, 400)
    assert Message.objects.get(pk=message.pk).status == "stopped"


@pytest.mark.django_db
def test_a_reply_is_shown_failed_when_its_usage_record_failed_whatever_its_message_says():
    conversation = Conversation.objects.create(visitor=VISITOR)

    def reply(status):
        return Message.objects.create(conversation=conversation, role="assistant", content="Hal", status=status)

    failed, stopped, unrecorded = reply("completed"), reply("stopped"), reply("completed")
    failed_record = make_record(message=failed, status="failed")
    stopped_record = make_record(message=stopped, status="stopped")
    assert stored(failed, False) == Stored(failed.pk, "failed", "Hal", failed_record, False)
    assert stored(stopped, True) == Stored(stopped.pk, "stopped", "Hal", stopped_record, True)
    assert stored(unrecorded, False) == Stored(unrecorded.pk, "completed", "Hal", None, False)


@pytest.mark.django_db
@pytest.mark.parametrize(("model", "spent"), [
    ("test/priced-model", Decimal("0.0105")),  # 1,000 prompt tokens at $3 a million + 500 at $15 a million
    ("test/unpriced-model", Decimal("0.003")),  # 1,500 tokens at the fallback $2 a million
])
def test_it_settles_the_replys_budget_at_its_records_cost_with_the_record(settings, model, spent):
    settings.CHAT_UNPRICED_USD_PER_MTOK = Decimal("2")
    ModelPrice.objects.create(model="test/priced-model", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
                              effective_from=timezone.now() - timedelta(days=1))
    scope = budgets.Scope("person", "alice", Decimal("1"))
    message = streaming_reply()
    turn = turn_of(message, usage=Usage(prompt_tokens=1000, completion_tokens=500))
    turn.call.model = model
    turn.reservation = budgets.reserve([scope], Decimal("0.05"))
    assert budgets.committed(scope) == (0, Decimal("0.05"))
    store(turn, Outcome(text="Hello", reason="", error="", ttft_ms=150, duration_ms=900, delivered=1))
    assert budgets.committed(scope) == (spent, 0)


def start_request(content, conversation=None, model="demo/assistant"):
    return {"content": content, "conversation": conversation, "model": model, "stream": True}


@pytest.mark.django_db
def test_it_starts_a_conversation_with_the_message_and_an_empty_reply(settings):
    from chat.limits import Allowance
    from chat.turns import Owner, _start

    settings.CHAT_SYSTEM_PROMPT, settings.CHAT_MAX_TOKENS = "Be brief.", 77
    settings.CHAT_UNPRICED_USD_PER_MTOK, settings.CHAT_SITE_DAILY_BUDGET_USD = Decimal("1"), None
    settings.CHAT_ADDRESS_DAILY_BUDGET_USD = None
    owner = Owner(None, "k" * 32, "198.51.100.7")
    turn = _start(owner, start_request("Hello there", model="nowhere/unpriced"), Allowance(0, Decimal("1"), 2))
    held = budgets.committed(budgets.Scope("person", owner.key, Decimal("1")))[1]
    assert turn.reservation is not None and held == turn.reservation.amount > 0  # the turn carries its hold
    conversation = Conversation.objects.get(pk=turn.conversation_id)
    assert (conversation.title, conversation.model, conversation.visitor) == ("Hello there", "nowhere/unpriced",
                                                                              owner.visitor)
    assert (turn.call.system, turn.call.max_tokens, turn.call.messages) == (
        "Be brief.", 77, [{"role": "user", "content": "Hello there"}])
    asked, reply = conversation.messages.all()
    assert (asked.role, asked.content, asked.status) == ("user", "Hello there", "completed")
    assert (reply.pk, reply.role, reply.status, reply.model) == (turn.message_id, "assistant", "streaming",
                                                                 "nowhere/unpriced")


@pytest.mark.django_db
def test_it_goes_on_with_a_users_own_conversation_in_the_model_now_chosen_and_refuses_anothers():
    from django.contrib.auth.models import User

    from chat.limits import Allowance, Refused
    from chat.turns import Owner, _start

    alice = Owner(User.objects.create_user("alice", password="pw"), "", "198.51.100.7")
    bob = Owner(User.objects.create_user("bob", password="pw"), "", "198.51.100.8")
    first = _start(alice, start_request("One"), Allowance(0, None, 2))
    second = _start(alice, start_request("Two", first.conversation_id, "demo/other"), Allowance(0, None, 2))
    assert second.conversation_id == first.conversation_id
    assert Conversation.objects.get(pk=first.conversation_id).model == "demo/other"
    assert [m["content"] for m in second.call.messages if m["role"] == "user"] == ["One", "Two"]
    with pytest.raises(Refused) as refused:
        _start(bob, start_request("Mine?", first.conversation_id), Allowance(0, None, 2))
    assert (str(refused.value), refused.value.code) == ("No such conversation.", "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("go_on", [False, True], ids=["new conversation", "a conversation of theirs"])
def test_a_refused_start_stores_nothing_holds_nothing_and_is_counted_once(settings, go_on):
    from billing.models import Refusal
    from chat.limits import Refused
    from chat.turns import Owner, start

    start = start.func  # what the database thread runs (database_sync_to_async's function)

    settings.CHAT_UNPRICED_USD_PER_MTOK, settings.CHAT_DAILY_BUDGET_USD = Decimal("1"), Decimal("0.01")
    settings.CHAT_SITE_DAILY_BUDGET_USD, settings.CHAT_MAX_TOKENS = Decimal("100"), 1000  # $0.001+ a reply
    owner = Owner(None, "k" * 32, "198.51.100.7")
    first = start(owner, start_request("Hello", model="nowhere/unpriced"))
    budgets.reserve([budgets.Scope("person", owner.key, Decimal("0.01"))], Decimal("0.0085"))  # nearly full now
    stored = (Conversation.objects.count(), list(Message.objects.values_list("pk", "content")),
              list(budgets.BudgetHold.objects.values_list("pk", flat=True)), budgets.committed(
                  budgets.Scope("site", "", Decimal("100"))))
    with pytest.raises(Refused) as refused:
        start(owner, start_request("Again", first.conversation_id if go_on else None, "nowhere/other"))
    assert refused.value.code == "budget_exceeded" and refused.value.scope == "person"
    assert (Conversation.objects.count(), list(Message.objects.values_list("pk", "content")),
            list(budgets.BudgetHold.objects.values_list("pk", flat=True)), budgets.committed(
                budgets.Scope("site", "", Decimal("100")))) == stored
    assert Conversation.objects.get(pk=first.conversation_id).model == "nowhere/unpriced"
    assert list(Refusal.objects.values_list("kind", "scope")) == [("budget_exceeded", "person")]


@pytest.mark.django_db
def test_a_reply_writes_two_messages_and_one_record_on_every_start_and_store(settings):
    """Each reply's rows, through the statements written once (chatsite/rows.py): ids in order, nothing shared."""
    from chat.turns import Owner, start

    start = start.func  # what the database thread runs (database_sync_to_async's function)

    owner = Owner(None, "k" * 32, "198.51.100.7")
    turns = []
    for i, conversation in enumerate([None, 0, None]):
        asked = start_request(f"Question {i}", turns[conversation].conversation_id if conversation is not None else None)
        turn = start(owner, asked)
        turn.call.usage = Usage(prompt_tokens=10 + i, completion_tokens=i)
        store(turn, Outcome(text=f"Answer {i}", reason="", error="", ttft_ms=5, duration_ms=9, delivered=i))
        turns.append(turn)
    assert turns[1].conversation_id == turns[0].conversation_id != turns[2].conversation_id
    assert [(m.role, m.content, m.status) for m in Message.objects.filter(conversation_id=turns[0].conversation_id)] == [
        ("user", "Question 0", "completed"), ("assistant", "Answer 0", "completed"),
        ("user", "Question 1", "completed"), ("assistant", "Answer 1", "completed")]
    records = {r.message_id: r for r in UsageRecord.objects.all()}
    assert sorted(records) == sorted(t.message_id for t in turns)
    for i, turn in enumerate(turns):
        record, reply = records[turn.message_id], Message.objects.get(pk=turn.message_id)
        assert (record.conversation_id, record.prompt_tokens, record.completion_tokens, record.request_id) == (
            turn.conversation_id, 10 + i, i, turn.request_id)
        assert reply.finished == record.finished and reply.created <= reply.finished
    conversation = Conversation.objects.get(pk=turns[0].conversation_id)
    assert conversation.created < conversation.updated  # the second reply moved it to the top
