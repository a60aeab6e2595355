"""The chat page, the small JSON endpoints it uses, and signing in, out and up."""

import json
from functools import wraps

from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import redirect_to_login
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.template.loader import render_to_string
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.models import UsageRecord
from chat import figures, markdown, sessions
from chat.models import Conversation, Message

LIST_LENGTH = 100  # conversations shown in the sidebar, most recently updated first
# What the page's <template> elements are rendered from: the markup the JS clones for a new message,
# a reply, its figures and a sidebar entry is the server's own (templates/chat/*.html).
BLANK = {
    "user": {"role": "user", "content": ""},
    "reply": {"role": "assistant", "status": "streaming"},
    "figures": dict.fromkeys(("model", "ttft", "tokens", "speed", "cost"), "–"),
    "conversation": {"id": 0, "title": ""},
}
_page_parts = {}  # (script prefix, urlconf) -> the page's parts that are the same for everyone
URL_NAMES = ("index", "my_usage", "logout", "login", "session")
ID_URL_NAMES = ("rename", "delete", "conversation")  # reversed with id 0: the page's JS puts the real one in


def page_parts():
    """Return the page's parts that depend on nobody's data, made once per process, not on every page:
    `blank`, the <template> contents rendered from BLANK, and `urls`, the links it reverses.

    They depend only on the templates and the URLs (the script prefix a proxy may set, a request's
    own urlconf), the key of what is kept; made anew on every page under DEBUG, where templates
    change under a running server, and after a settings change (tests).
    """
    key = (get_script_prefix(), get_urlconf())
    parts = None if settings.DEBUG else _page_parts.get(key)
    if parts is None:
        parts = _page_parts[key] = {
            "blank": {
                "user": render_to_string("chat/message.html", {"message": BLANK["user"]}),
                "reply": render_to_string("chat/message.html", {"message": BLANK["reply"], "live": True}),
                "figures": render_to_string("chat/figures.html", {"figures": BLANK["figures"]}),
                "conversation": render_to_string("chat/conversation_item.html",
                                                 {"conversation": BLANK["conversation"], "current": None}),
            },
            "urls": {**{name: reverse(name) for name in URL_NAMES},
                     **{name: reverse(name, args=[0]) for name in ID_URL_NAMES}},
        }
    return parts


@receiver(setting_changed)
def _forget_page_parts(**kwargs):
    _page_parts.clear()


def login_if_required(view):
    """Send an anonymous visitor to the login page (GET) or refuse them (POST) when CHAT_REQUIRE_LOGIN is on."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        if settings.CHAT_REQUIRE_LOGIN and not request.user.is_authenticated:
            if request.method == "GET":
                return redirect_to_login(request.get_full_path())
            return JsonResponse({"error": "Sign in first."}, status=403)
        return view(request, *args, **kwargs)

    return guarded


@login_if_required
@require_GET
def index(request, conversation_id=None):
    """Render the chat page, with the selected conversation (`/c/<id>/` or `?c=<id>`) if any."""
    chosen = request.GET.get("c", "")
    # "²".isdigit(), but int("²") fails; more than 18 digits overflows a database integer.
    if conversation_id is None and chosen.isascii() and chosen.isdigit() and len(chosen) <= 18:
        conversation_id = int(chosen)
    # A visitor without a session owns nothing yet (and gets no session row for looking: see session()).
    owned = Conversation.objects.owned_by(request.user, sessions.visitor_of(request))
    # A first visit owns nothing: no query to build (an empty queryset still goes through the SQL compiler).
    conversations = [] if owned.query.is_empty() else list(owned.values("id", "title", "model")[:LIST_LENGTH])
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
        "transcript": transcript(selected["id"], figures.shows_usage(request.user)) if selected else [],
        **page_parts(),
        "max_chars": settings.CHAT_MAX_PROMPT_CHARS,
        "models": settings.CHAT_MODELS,
        "model": selected["model"] if selected and selected["model"] in settings.CHAT_MODELS else settings.CHAT_MODELS[0],
        "show_usage": figures.shows_usage(request.user),  # the link to billing's own-usage page
    }
    return render(request, "chat/index.html", context)


def transcript(conversation_id, shows_usage=True):
    """Return a conversation's messages for the page, replies rendered from Markdown with their figures."""
    messages = list(Message.objects.filter(conversation_id=conversation_id))
    records = {
        r["message_id"]: r
        for r in UsageRecord.objects.filter(conversation_id=conversation_id, message__isnull=False).values(
            "message_id", "model", "prompt_tokens", "completion_tokens", "estimated", "cost_usd", "ttft_ms",
            "duration_ms", "streamed", "error",
        )
    }
    for message in messages:
        if message.role == Message.Role.ASSISTANT:
            message.html = markdown.render(message.content) if message.content else ""
            record = records.get(message.pk)
            message.error = record["error"] if record else ""
            message.figures = record and figures.figures(
                model=record["model"], prompt_tokens=record["prompt_tokens"],
                completion_tokens=record["completion_tokens"], estimated=record["estimated"],
                cost_usd=record["cost_usd"], ttft_ms=record["ttft_ms"], duration_ms=record["duration_ms"],
                streamed=record["streamed"], usage=shows_usage,
            )
    return messages


def owned_conversation(request, conversation_id):
    """Return the visitor's conversation, or raise Http404 when it is not theirs (or not there)."""
    owned = Conversation.objects.owned_by(request.user, sessions.visitor_of(request))
    return get_object_or_404(owned, pk=conversation_id)


@login_if_required
@require_POST
def session(request):
    """Give the visitor a session before their first message, so the page can open its socket."""
    created = sessions.start(request)
    return JsonResponse({"session": True}, status=201 if created else 200)


@login_if_required
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


@login_if_required
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


class LoginView(auth_views.LoginView):
    """Sign in any active user; the visitor's anonymous conversations and usage become theirs."""

    template_name = "chat/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(allow_signup=settings.CHAT_ALLOW_SIGNUP, **kwargs)

    def form_valid(self, form):
        visitor = sessions.visitor_of(self.request)  # before login() gives the session a new key
        response = super().form_valid(form)
        sessions.adopt(visitor, form.get_user())
        return response


@require_http_methods(["GET", "POST"])
def logout(request):
    """Ask to confirm (GET), then sign out (POST): the person's open sockets close everywhere."""
    if request.method == "POST":
        auth_logout(request)
        return redirect(settings.LOGOUT_REDIRECT_URL)
    return render(request, "chat/logout.html")


@require_http_methods(["GET", "POST"])
def signup(request):
    """Create an account and sign it in, keeping the visitor's conversations (only with CHAT_ALLOW_SIGNUP)."""
    if not settings.CHAT_ALLOW_SIGNUP:
        raise Http404("Sign-up is closed.")
    if request.user.is_authenticated:
        return redirect("index")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        visitor = sessions.visitor_of(request)
        user = form.save()
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        sessions.adopt(visitor, user)
        return redirect(safe_next(request))
    return render(request, "chat/signup.html", {"form": form, "next": request.GET.get("next", "")})


def safe_next(request):
    """Return the `next` URL when it stays on this site, else the page after sign-in."""
    target = request.POST.get("next") or request.GET.get("next", "")
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)
