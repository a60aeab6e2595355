"""API keys: who may call the OpenAI-compatible endpoint, which models, how often and for how much."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "cs-"


def digest(raw):
    """Return the stored form of a key: its SHA-256 (keys are long random strings, so no salt or stretching)."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def create_key(self, name, **fields):
        """Create a key named `name`; return (ApiKey, the raw key), the only time the raw key exists."""
        key = self.model(name=name, **fields)
        raw = key.new_secret()
        key.save(force_insert=True)
        return key, raw

    def authenticate(self, raw, now=None):
        """Return the usable key whose raw form is `raw`, or None (unknown, revoked or expired)."""
        if not raw or not raw.startswith(KEY_PREFIX) or len(raw) > 200:
            return None
        key = self.select_related("user").filter(hashed=digest(raw)).first()
        if key is None or not key.is_active(now):
            return None
        return key


class ApiKey(models.Model):
    name = models.CharField(max_length=100, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys",
        help_text="whose requests these are (usage records are written in this user's name)",
    )
    prefix = models.CharField(max_length=16, editable=False, help_text="the key's first characters, to recognise it")
    hashed = models.CharField(max_length=64, unique=True, editable=False)
    allowed_models = models.TextField(
        blank=True, help_text="comma-separated model ids this key may use; empty: every configured model"
    )
    rate_limit = models.PositiveIntegerField(default=0, help_text="requests a minute; 0: no limit")
    daily_budget_usd = models.DecimalField(
        "daily budget (USD)", max_digits=14, decimal_places=6, null=True, blank=True,
        help_text="what this key's requests may cost per UTC day; empty: no budget",
    )
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self):
        return self.name

    def is_active(self, now=None):
        """Return whether the key may be used now: not revoked, not expired."""
        now = now or timezone.now()
        return self.revoked is None and (self.expires is None or self.expires > now)

    def models_allowed(self):
        """Return the model ids this key is limited to, or an empty list for every model."""
        return [m.strip() for m in self.allowed_models.split(",") if m.strip()]

    def allows(self, model):
        """Return whether this key may use `model`."""
        allowed = self.models_allowed()
        return not allowed or model in allowed

    def new_secret(self):
        """Give the key a fresh secret (stored hashed); return it, the only time it is readable."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix, self.hashed = raw[:10], digest(raw)
        return raw

    def revoke(self):
        """Revoke the key from now on (it stays listed, and its usage records keep pointing at it)."""
        if self.revoked is None:
            self.revoked = timezone.now()
            self.save(update_fields=["revoked"])

    @property
    def state(self):
        """Return `active`, `revoked` or `expired`."""
        if self.revoked is not None:
            return "revoked"
        return "active" if self.is_active() else "expired"
