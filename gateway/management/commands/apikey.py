from datetime import timedelta, timezone as dt_timezone
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from gateway.models import ApiKey


class Command(BaseCommand):
    help = "Create, list or revoke API keys for the OpenAI-compatible endpoint (/v1/chat/completions)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a key and print it (the only time it is shown)")
        create.add_argument("--name", required=True, help="a unique name for the key")
        create.add_argument("--user", help="the username whose requests these are")
        create.add_argument("--daily-budget", help="USD the key may spend per UTC day")
        create.add_argument("--models", help="comma-separated model ids the key may use (default: all)")
        create.add_argument("--rate-limit", type=int, default=0, help="requests a minute (default: no limit)")
        create.add_argument("--expires", help="an ISO date-time, or a number of days from now")
        actions.add_parser("list", help="list the keys (never their secret)")
        revoke = actions.add_parser("revoke", help="revoke a key by name")
        revoke.add_argument("name")

    def handle(self, *args, action, **options):
        getattr(self, action)(**options)

    def create(self, name, user, daily_budget, models, rate_limit, expires, **options):
        """Create the key and print it once."""
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"A key named {name!r} exists: choose another name, or revoke it first.")
        fields = {"allowed_models": ",".join(read_models(models)) if models else "", "rate_limit": rate_limit}
        if user:
            fields["user"] = get_user_model().objects.filter(username=user).first()
            if fields["user"] is None:
                raise CommandError(f"No user named {user!r}: create it with `manage.py createsuperuser`.")
        if daily_budget is not None:
            fields["daily_budget_usd"] = read_budget(daily_budget)
        if expires:
            fields["expires"] = read_expiry(expires)
        if rate_limit < 0:
            raise CommandError("--rate-limit must be 0 (no limit) or more.")
        _, raw = ApiKey.objects.create_key(name, **fields)
        self.stderr.write(f"Created key {name!r}. It is shown once; store it now:")
        self.stdout.write(raw)

    def list(self, **options):
        """Print one line per key: name, state, prefix, user, models, limits, expiry."""
        keys = ApiKey.objects.select_related("user")
        if not keys:
            self.stdout.write("No API keys. Create one with `manage.py apikey create --name NAME`.")
            return
        header = ["name", "state", "prefix", "user", "models", "rate/min", "budget/day", "expires"]
        rows = [header] + [[
            key.name, key.state, key.prefix + "…", key.user.get_username() if key.user else "-",
            key.allowed_models or "all", str(key.rate_limit or "-"),
            f"${key.daily_budget_usd.normalize()}" if key.daily_budget_usd is not None else "-",
            f"{key.expires:%Y-%m-%d %H:%M}" if key.expires else "-",
        ] for key in keys]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def revoke(self, name, **options):
        """Revoke the key named `name`."""
        key = ApiKey.objects.filter(name=name).first()
        if key is None:
            raise CommandError(f"No key named {name!r}: `manage.py apikey list` shows them.")
        key.revoke()
        self.stdout.write(f"Revoked key {name!r}.")


def read_models(value):
    """Return the model ids in `--models`, each checked against CHAT_MODELS."""
    models = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in models if m not in settings.CHAT_MODELS]
    if unknown:
        raise CommandError(f"Not in CHAT_MODELS: {', '.join(unknown)}. Configured: {', '.join(settings.CHAT_MODELS)}.")
    return models


def read_budget(value):
    """Return `--daily-budget` as a non-negative Decimal."""
    try:
        budget = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"--daily-budget must be an amount in USD, like 5 or 0.25, not {value!r}.") from None
    if budget < 0 or not budget.is_finite():
        raise CommandError("--daily-budget must be 0 or more.")
    return budget


def read_expiry(value):
    """Return `--expires` (days from now, or an ISO date-time) as an aware datetime."""
    if value.isdigit():
        return timezone.now() + timedelta(days=int(value))
    when = parse_datetime(value) or parse_datetime(value + "T00:00:00")
    if when is None:
        raise CommandError(f"--expires must be a number of days or an ISO date-time like 2026-12-31, not {value!r}.")
    return when if timezone.is_aware(when) else timezone.make_aware(when, dt_timezone.utc)
