"""The chat page and the small JSON endpoints it uses."""

import json

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from billing.models import UsageRecord
from chat import markdown, sessions
from chat.models import Conversation, Message

LIST_LENGTH = 100  # conversations shown in the sidebar, most recently updated first


@require_GET
def index(request, conversation_id=None):
    """Render the chat page, with the selected conversation (`/c/<id>/` or `?c=<id>`) if any."""
    if conversation_id is None and request.GET.get("c", "").isdigit():
        conversation_id = int(request.GET["c"])
    # A visitor without a session owns nothing yet (and gets no session row for looking: see session()).
    owned = Conversation.objects.owned_by(request.user, sessions.visitor_of(request))
    conversations = list(owned.values("id", "title", "model")[:LIST_LENGTH])
    selected = None
    if conversation_id is not None:
        selected = next((c for c in conversations if c["id"] == conversation_id), None)
        if selected is None:
            selected = owned.filter(pk=conversation_id).values("id", "title", "model").first()
        if selected is None:
            raise Http404("No such conversation.")
    context = {
        "conversations": conversations,
        "has_session": sessions.has_session(request),
        "selected": selected,
        "transcript": transcript(selected["id"]) if selected else [],
        "models": settings.CHAT_MODELS,
        "model": selected["model"] if selected and selected["model"] in settings.CHAT_MODELS else settings.CHAT_MODELS[0],
        "show_usage": getattr(settings, "CHAT_SHOW_USAGE", True),  # the link to billing's own-usage page
    }
    return render(request, "chat/index.html", context)


def transcript(conversation_id):
    """Return a conversation's messages for the page, replies rendered from Markdown with their figures."""
    messages = list(Message.objects.filter(conversation_id=conversation_id))
    figures = {
        r["message_id"]: r
        for r in UsageRecord.objects.filter(conversation_id=conversation_id, message__isnull=False).values(
            "message_id", "prompt_tokens", "completion_tokens", "estimated", "cost_usd", "ttft_ms",
            "duration_ms", "error",
        )
    }
    for message in messages:
        if message.role == Message.Role.ASSISTANT:
            message.html = markdown.render(message.content) if message.content else ""
            message.figures = figures.get(message.pk)
            if message.figures:
                message.figures["tokens_per_s"] = tokens_per_second(message.figures)
                message.figures["cost_label"] = cost_label(message.figures["cost_usd"])
    return messages


def tokens_per_second(figures):
    """Return a stored reply's output speed in tokens per second, or None when it cannot be told."""
    streaming_ms = figures["duration_ms"] - (figures["ttft_ms"] or 0)
    if figures["completion_tokens"] < 2 or streaming_ms <= 0:
        return None
    return round(figures["completion_tokens"] * 1000 / streaming_ms, 1)


def cost_label(cost):
    """Return a cost in dollars with every significant digit (`$0.0000156`), or say it is unpriced."""
    if cost is None:
        return "not priced"
    digits = f"{cost:.10f}".rstrip("0")
    whole, _, fraction = digits.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def owned_conversation(request, conversation_id):
    """Return the visitor's conversation, or raise Http404 when it is not theirs (or not there)."""
    owned = Conversation.objects.owned_by(request.user, sessions.visitor_of(request))
    return get_object_or_404(owned, pk=conversation_id)


@require_POST
def session(request):
    """Give the visitor a session before their first message, so the page can open its socket."""
    created = sessions.start(request)
    return JsonResponse({"session": True}, status=201 if created else 200)


@require_POST
def rename(request, conversation_id):
    """Rename one of the visitor's conversations; answer its new title as JSON."""
    conversation = owned_conversation(request, conversation_id)
    title = Conversation.title_from(str(request_data(request).get("title", "")))
    if not title:
        return JsonResponse({"error": "The title is empty."}, status=400)
    conversation.title = title
    conversation.save(update_fields=["title"])
    return JsonResponse({"id": conversation.pk, "title": conversation.title})


@require_POST
def delete(request, conversation_id):
    """Delete one of the visitor's conversations and its messages."""
    conversation = owned_conversation(request, conversation_id)
    conversation.delete()
    return JsonResponse({"id": conversation_id, "deleted": True})


def request_data(request):
    """Return the POSTed fields, from a JSON body or a form."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return request.POST
