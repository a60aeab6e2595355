"""The chat page and the small JSON endpoints it uses."""

from django.conf import settings
from django.shortcuts import render


def index(request):
    """Render the chat page; make sure the visitor has a session, which owns their conversations."""
    if not request.session.session_key:
        request.session.save()
    return render(request, "chat/index.html", {"models": settings.CHAT_MODELS})
