"""Cache writes priced apart, the upstream's own cost beside ours, and the default Anthropic cache-write rates."""

from datetime import datetime, timezone
from decimal import Decimal

import django.utils.timezone
from django.db import migrations, models

# Anthropic's 5-minute cache writes cost 1.25x input. Setting the rate on the default rows rewrites no history:
# no record had cache writes before this migration, so no past cost changes.
CACHE_WRITES = {
    "anthropic/claude-sonnet-4-5": "3.75", "anthropic/claude-sonnet-4": "3.75",
    "anthropic/claude-haiku-4-5": "1.25", "anthropic/claude-3-5-haiku": "1.00",
}
DEFAULTS_FROM = datetime(2025, 1, 1, tzinfo=timezone.utc)


def add_cache_write_rates(apps, schema_editor):
    """Give the default Anthropic price rows their cache-write rate, where none is set."""
    ModelPrice = apps.get_model("billing", "ModelPrice")
    for model, rate in CACHE_WRITES.items():
        ModelPrice.objects.filter(model=model, effective_from=DEFAULTS_FROM, cache_write_per_mtok=None).update(
            cache_write_per_mtok=Decimal(rate)
        )


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0003_report_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='modelprice',
            name='cache_write_per_mtok',
            field=models.DecimalField(blank=True, decimal_places=6, help_text='Prompt tokens written to the cache (Anthropic: 1.25x input). Leave empty for the input rate.', max_digits=14, null=True, verbose_name='cache write $/Mtok'),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='cache_write_tokens',
            field=models.PositiveIntegerField(default=0, help_text='prompt tokens written to the cache'),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='upstream_cost_usd',
            field=models.DecimalField(blank=True, decimal_places=10, help_text="the cost the upstream reported (LiteLLM's, OpenRouter's usage.cost), kept beside ours", max_digits=20, null=True),
        ),
        migrations.AlterField(
            model_name='modelprice',
            name='effective_from',
            field=models.DateTimeField(default=django.utils.timezone.now, help_text='When this price starts. To change a price, add a new row with a new effective_from: records keep the price that was in force when they started, and history stays visible here.'),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='cached_tokens',
            field=models.PositiveIntegerField(default=0, help_text='prompt tokens read from the cache'),
        ),
        migrations.RunPython(add_cache_write_rates, migrations.RunPython.noop),
    ]
