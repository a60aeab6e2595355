"""The two database visits of a reply: one before it starts, one when it ends, never one per token."""

import uuid
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import budgets
from billing.models import COST_PLACES, AbandonmentEvent, UsageRecord
from chat import figures, limits
from chat.limits import Refused
from chat.models import Conversation, Message
from chat.visitors import visitor_hash
from chatsite import rows
from chat.providers import Call, Usage

# How a reply ended early -> (usage record status, message status, abandonment reason).
ENDINGS = {
    "stop": (UsageRecord.Status.STOPPED, Message.Status.STOPPED, AbandonmentEvent.Reason.STOP),
    "disconnect": (UsageRecord.Status.DISCONNECTED, Message.Status.STOPPED, AbandonmentEvent.Reason.DISCONNECT),
}


@dataclass(frozen=True, slots=True)
class Owner:
    """Who is chatting: a user, or an anonymous visitor's session (its key stays in memory, never stored)."""

    user: object
    session_key: str
    address: str = ""  # the client's network address (chat.addresses), for per-address limits

    @property
    def user_id(self):
        return self.user.pk if self.user is not None and self.user.is_authenticated else None

    @property
    def visitor(self):
        """Return the keyed hash that stands for an anonymous visitor in stored data, "" for a user."""
        return "" if self.user_id else visitor_hash(self.session_key)

    @property
    def key(self):
        """Return a string that names this person, for per-person counters."""
        return f"user:{self.user_id}" if self.user_id else f"visitor:{self.visitor}"


@dataclass(slots=True)
class Turn:
    conversation_id: int
    message_id: int
    call: Call
    started: object  # an aware datetime
    history_dropped: int
    user_id: int | None
    visitor: str
    title: str
    shows_usage: bool  # whether the person may see token counts and cost (CHAT_SHOW_USAGE)
    reservation: object = None  # budget held for this reply (billing.budgets), settled with its record
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)  # the usage record's: the reference a person quotes


@dataclass(frozen=True, slots=True)
class Stored:
    """A reply as stored, what its `done` frame tells (chat.protocol.done)."""

    message_id: int
    status: str  # completed, stopped or failed
    text: str
    record: object  # its UsageRecord, None when it has none (a reply whose process died)
    shows_usage: bool  # whether the person may see its token counts and cost (CHAT_SHOW_USAGE)


@dataclass(slots=True)
class Outcome:
    text: str
    reason: str  # "", stop, disconnect, first_token_timeout, stall
    error: str
    ttft_ms: int | None
    duration_ms: int
    delivered: int
    left_ms: int | None = None  # when the person left, if they did not come back (the grace period)
    left_streaming: bool | None = None  # whether the reply had begun when they left


@database_sync_to_async
def start(owner, request):
    """Check the person's limits, reserve the reply's worst case, store the message and an empty reply.

    Return the Turn to relay; raise Refused (counted) before anything is stored or sent upstream.
    """
    allowance = limits.check(owner, request["model"])
    try:
        return _start(owner, request, allowance)
    except Refused as exc:
        if exc.code == "budget_exceeded":  # counted once the transaction that raised it has rolled back
            exc.count(request["model"])
        raise


def _start(owner, request, allowance):
    content = request["content"]
    with transaction.atomic():
        if request["conversation"] is None:
            conversation = Conversation(
                user_id=owner.user_id, visitor=owner.visitor,
                title=Conversation.title_from(content), model=request["model"],
            )
            history, dropped = [], 0
        else:
            conversations = Conversation.objects.owned_by(owner.user, owner.visitor)
            conversation = conversations.filter(pk=request["conversation"]).first()
            if conversation is None:
                raise Refused("No such conversation.", "not_found")
            conversation.model = request["model"]
            history, dropped = conversation.history(settings.CHAT_MAX_HISTORY_CHARS - len(content))
        history.append({"role": Message.Role.USER.value, "content": content})
        call = Call(
            model=request["model"], messages=history, stream=request["stream"],
            system=settings.CHAT_SYSTEM_PROMPT, max_tokens=settings.CHAT_MAX_TOKENS,
        )
        # Before anything is written: a refused request leaves no conversation and no message.
        reservation = limits.reserve(owner, allowance, call)
        if conversation.pk is None:
            rows.insert([conversation])
        else:
            conversation.updated = timezone.now()  # as auto_now would
            rows.update(Conversation, conversation.pk, model=conversation.model, updated=conversation.updated)
        _, reply = rows.insert([
            Message(conversation=conversation, role=Message.Role.USER, content=content),
            Message(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING,
                    model=request["model"]),
        ])
    return Turn(conversation.pk, reply.pk, call, timezone.now(), dropped, conversation.user_id,
                conversation.visitor, conversation.title, figures.shows_usage(owner.user), reservation)


def usage_of(call, failed):
    """Return (usage, estimated): the upstream's report, or an estimate when it gave none."""
    if call.usage is not None and not call.usage_partial:
        return call.usage, False
    if failed and not call.opened:
        return Usage(), False  # refused before it began: nothing to bill
    return call.estimated_usage(), True


def upstream_cost(usage):
    """Return the upstream's reported cost rounded to the record's 10 places, or None when it gave none."""
    return None if usage.cost is None else usage.cost.quantize(COST_PLACES)


def store(turn, outcome):
    """Store the reply, write its one usage record (and abandonment event); return it as Stored."""
    call = turn.call
    failed = bool(outcome.error)
    record_status, message_status, abandoned = ENDINGS.get(
        outcome.reason, (UsageRecord.Status.COMPLETED, Message.Status.COMPLETED, None)
    )
    if failed:
        record_status, message_status, abandoned = UsageRecord.Status.FAILED, Message.Status.FAILED, None
    usage, estimated = usage_of(call, failed)
    now = timezone.now()
    abandonment = None
    if abandoned is not None:
        streaming = outcome.ttft_ms is not None if outcome.left_streaming is None else outcome.left_streaming
        abandonment = {
            "reason": abandoned,
            "phase": AbandonmentEvent.Phase.STREAMING if streaming else AbandonmentEvent.Phase.BEFORE_FIRST_TOKEN,
            "tokens_delivered": outcome.delivered,
            "elapsed_ms": outcome.duration_ms if outcome.left_ms is None else outcome.left_ms,
        }
    with transaction.atomic():
        rows.update(Message, turn.message_id,
                    content=outcome.text, status=message_status, ttft_ms=outcome.ttft_ms, finished=now)
        record = UsageRecord.record(
            abandonment=abandonment,
            user_id=turn.user_id, visitor=turn.visitor,
            conversation_id=turn.conversation_id, message_id=turn.message_id,
            model=call.model, upstream_model=call.upstream_model, streamed=call.stream, status=record_status,
            finish_reason=call.finish_reason, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens, upstream_cost_usd=upstream_cost(usage), estimated=estimated,
            ttft_ms=outcome.ttft_ms, duration_ms=outcome.duration_ms, retries=call.retries,
            history_dropped=turn.history_dropped, error=outcome.error, started=turn.started, finished=now,
            request_id=turn.request_id,
        )
        budgets.settle(turn.reservation, limits.actual_cost(turn.reservation, record))
    return Stored(turn.message_id, message_status, outcome.text, record, turn.shows_usage)


# Undecorated above, so that the mutation run (make mutate) plants its bugs in it too.
finish = database_sync_to_async(store)


@database_sync_to_async
def replies_of(owner, conversation_id, message_ids):
    """Return (ids of the replies streaming in the person's conversation, each finished one asked for as Stored)."""
    conversations = Conversation.objects.owned_by(owner.user, owner.visitor)
    replies = Message.objects.filter(conversation__in=conversations, role=Message.Role.ASSISTANT)
    streaming = []
    if conversation_id is not None:
        streaming = list(replies.filter(conversation_id=conversation_id, status=Message.Status.STREAMING)
                         .values_list("pk", flat=True))
    asked = [m for m in message_ids if m not in streaming]
    shows_usage = figures.shows_usage(owner.user)
    finished = [stored(message, shows_usage)
                for message in replies.filter(pk__in=asked).exclude(status=Message.Status.STREAMING)]
    return streaming, finished


@database_sync_to_async
def owns(owner, conversation_id):
    """Return whether the conversation is the person's."""
    return Conversation.objects.owned_by(owner.user, owner.visitor).filter(pk=conversation_id).exists()


@database_sync_to_async
def stored_of(owner, message_id):
    """Return a finished reply of the person's as Stored, or None while it is still streaming."""
    conversations = Conversation.objects.owned_by(owner.user, owner.visitor)
    message = Message.objects.filter(pk=message_id, conversation__in=conversations).first()
    if message is None or message.status == Message.Status.STREAMING:
        return None
    return stored(message, figures.shows_usage(owner.user))


@database_sync_to_async
def lost(owner, message_id):
    """Return as Stored, `failed`, a reply left `streaming` by a process that died (nothing produces it)."""
    conversations = Conversation.objects.owned_by(owner.user, owner.visitor)
    message = Message.objects.filter(pk=message_id, conversation__in=conversations).first()
    if message is None:
        return None
    shows_usage = figures.shows_usage(owner.user)
    if message.status != Message.Status.STREAMING:
        return stored(message, shows_usage)
    return Stored(message.pk, "failed", message.content, None, shows_usage)


def stored(message, shows_usage):
    """Return a finished reply, with its usage record, as Stored."""
    record = UsageRecord.objects.filter(message_id=message.pk).first()
    failed = record is not None and record.status == UsageRecord.Status.FAILED
    return Stored(message.pk, "failed" if failed else message.status, message.content, record, shows_usage)
