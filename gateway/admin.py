"""Staff pages for API keys: create one (its secret is shown once), limit it, revoke it."""

from django.contrib import admin, messages
from django.utils import timezone

from gateway.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "state", "prefix", "user", "allowed_models", "rate_limit", "daily_budget_usd", "expires",
                    "created"]
    list_filter = ["revoked", "expires"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix", "created", "revoked"]
    fields = ["name", "user", "allowed_models", "rate_limit", "daily_budget_usd", "expires", "prefix", "created",
              "revoked"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        """Give a new key its secret and show it once; an existing key keeps its secret."""
        if not change:
            raw = obj.new_secret()
            obj.save()
            messages.warning(request, f"The key {obj.name!r} is {raw} — copy it now: it is shown only this once.")
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        """Revoke the selected keys from now on."""
        count = queryset.filter(revoked=None).update(revoked=timezone.now())
        messages.success(request, f"Revoked {count} key(s).")
