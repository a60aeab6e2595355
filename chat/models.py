"""Conversations and their messages, owned by a user or, for anonymous visitors, their session's hash."""

from django.conf import settings
from django.db import models
from django.db.models import Q

TITLE_LENGTH = 80


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, user, visitor):
        """Return the conversations that belong to this user, or to this anonymous visitor (chat.visitors)."""
        if user is not None and user.is_authenticated:
            return self.filter(user=user)
        if not visitor:
            return self.none()
        return self.filter(user=None, visitor=visitor)

    def adopt(self, visitor, user):
        """Give an anonymous visitor's conversations to the user they signed in as; return how many."""
        return self.filter(user=None, visitor=visitor).update(user=user, visitor="")


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    visitor = models.CharField(
        max_length=32, blank=True, db_index=True, help_text="keyed hash of the anonymous owner's session key"
    )
    title = models.CharField(max_length=TITLE_LENGTH, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated"]
        indexes = [models.Index(fields=["user", "-updated"])]

    def __str__(self):
        return self.title or f"Conversation {self.pk}"

    @staticmethod
    def title_from(text):
        """Return a one-line title made from a person's first message."""
        line = " ".join(text.split())
        if len(line) <= TITLE_LENGTH:
            return line
        return line[: TITLE_LENGTH - 1].rsplit(" ", 1)[0] + "…"

    def history(self, max_chars):
        """Return the stored messages to send upstream, newest last, and how many old ones were dropped.

        Messages are dropped from the oldest end until the rest fits in `max_chars`; empty and
        failed replies are never sent.
        """
        turns = (
            self.messages.filter(~Q(content="")).exclude(role=Message.Role.ASSISTANT, status=Message.Status.FAILED)
            .order_by("-id")
            .values_list("role", "content")
        )
        kept, size, dropped = [], 0, 0
        for role, content in turns.iterator():
            if dropped or size + len(content) > max_chars:
                dropped += 1
                continue
            kept.append({"role": role, "content": content})
            size += len(content)
        kept.reverse()
        return kept, dropped


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETED = "completed"
        STOPPED = "stopped"
        FAILED = "failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED)
    model = models.CharField(max_length=200, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.role}: {self.content[:40]}"
