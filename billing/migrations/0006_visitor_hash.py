"""Usage records name their anonymous owner by a keyed hash of the session key, never the key."""

from django.conf import settings
from django.db import migrations, models
from django.utils.crypto import salted_hmac


def visitor_hash(session_key):
    # A frozen copy of chat.visitors.visitor_hash: migrations must not change when the app does.
    if not session_key:
        return ""
    return salted_hmac("chatsite.visitor", session_key, secret=settings.SECRET_KEY, algorithm="sha256").hexdigest()[:32]


def hash_session_keys(apps, schema_editor):
    UsageRecord = apps.get_model("billing", "UsageRecord")
    keys = UsageRecord.objects.exclude(session_key="").values_list("session_key", flat=True).distinct()
    for key in list(keys.iterator()):
        UsageRecord.objects.filter(session_key=key).update(visitor=visitor_hash(key))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_usage_channel"),
        ("chat", "0002_visitor_hash"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="usagerecord",
            name="usage_report_by_user",
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="visitor",
            field=models.CharField(
                blank=True, help_text="anonymous requests: keyed hash of the session key (never the key)", max_length=32
            ),
        ),
        migrations.RunPython(hash_session_keys, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField(
            model_name="usagerecord",
            name="session_key",
        ),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(
                fields=["user", "visitor", "ttft_ms", "started", "prompt_tokens", "completion_tokens", "cost_usd"],
                name="usage_report_by_user",
            ),
        ),
    ]
