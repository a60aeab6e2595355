"""Where a request came from: the chat page, the API, a batch or a benchmark."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0004_cache_writes_and_upstream_cost'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagerecord',
            name='channel',
            field=models.CharField(choices=[('chat', 'Chat'), ('api', 'Api'), ('batch', 'Batch'), ('bench', 'Bench')], db_index=True, default='chat', help_text='where the request came from: the chat page, the API, a batch or a benchmark', max_length=16),
        ),
    ]
