"""Seed the price table with published list prices (USD per million tokens); edit them in the admin."""

from datetime import datetime, timezone
from decimal import Decimal

from django.db import migrations

EFFECTIVE_FROM = datetime(2025, 1, 1, tzinfo=timezone.utc)

# model id, input, output, cached input (USD per million tokens), effective from.
PRICES = [
    ("openai/gpt-4.1", "2.00", "8.00", "0.50", EFFECTIVE_FROM),
    ("openai/gpt-4.1-mini", "0.40", "1.60", "0.10", EFFECTIVE_FROM),
    ("openai/gpt-4.1-nano", "0.10", "0.40", "0.025", EFFECTIVE_FROM),
    ("openai/gpt-4o", "2.50", "10.00", "1.25", EFFECTIVE_FROM),
    ("openai/gpt-4o-mini", "0.15", "0.60", "0.075", EFFECTIVE_FROM),
    ("anthropic/claude-sonnet-4-5", "3.00", "15.00", "0.30", EFFECTIVE_FROM),
    ("anthropic/claude-sonnet-4", "3.00", "15.00", "0.30", EFFECTIVE_FROM),
    ("anthropic/claude-haiku-4-5", "1.00", "5.00", "0.10", EFFECTIVE_FROM),
    ("anthropic/claude-3-5-haiku", "0.80", "4.00", "0.08", EFFECTIVE_FROM),
    ("gemini/gemini-2.5-flash", "0.30", "2.50", "0.075", EFFECTIVE_FROM),
    # DeepSeek V3 / R1 list prices, then V3.1 (2025-09-05), then V3.2-Exp for both ids (2025-09-29).
    ("deepseek/deepseek-chat", "0.27", "1.10", "0.07", EFFECTIVE_FROM),
    ("deepseek/deepseek-reasoner", "0.55", "2.19", "0.14", EFFECTIVE_FROM),
    ("deepseek/deepseek-chat", "0.56", "1.68", "0.07", datetime(2025, 9, 5, 16, tzinfo=timezone.utc)),
    ("deepseek/deepseek-reasoner", "0.56", "1.68", "0.07", datetime(2025, 9, 5, 16, tzinfo=timezone.utc)),
    ("deepseek/deepseek-chat", "0.28", "0.42", "0.028", datetime(2025, 9, 29, 16, tzinfo=timezone.utc)),
    ("deepseek/deepseek-reasoner", "0.28", "0.42", "0.028", datetime(2025, 9, 29, 16, tzinfo=timezone.utc)),
    ("demo/assistant", "0", "0", "0", EFFECTIVE_FROM),
]


def add_prices(apps, schema_editor):
    """Create the default price rows that are not there yet."""
    ModelPrice = apps.get_model("billing", "ModelPrice")
    for model, input_rate, output_rate, cached_rate, effective_from in PRICES:
        ModelPrice.objects.get_or_create(
            model=model, effective_from=effective_from,
            defaults={
                "input_per_mtok": Decimal(input_rate), "output_per_mtok": Decimal(output_rate),
                "cached_input_per_mtok": Decimal(cached_rate),
            },
        )


def remove_prices(apps, schema_editor):
    """Delete the default price rows that no usage record points at."""
    ModelPrice = apps.get_model("billing", "ModelPrice")
    UsageRecord = apps.get_model("billing", "UsageRecord")
    used = set(UsageRecord.objects.exclude(price=None).values_list("price_id", flat=True).distinct())
    for model, _, _, _, effective_from in PRICES:
        ModelPrice.objects.filter(model=model, effective_from=effective_from).exclude(pk__in=used).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(add_prices, remove_prices)]
