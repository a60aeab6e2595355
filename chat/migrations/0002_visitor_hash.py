"""Conversations name their anonymous owner by a keyed hash of the session key, never the key."""

from django.conf import settings
from django.db import migrations, models
from django.utils.crypto import salted_hmac


def visitor_hash(session_key):
    # A frozen copy of chat.visitors.visitor_hash: migrations must not change when the app does.
    if not session_key:
        return ""
    return salted_hmac("chatsite.visitor", session_key, secret=settings.SECRET_KEY, algorithm="sha256").hexdigest()[:32]


def hash_session_keys(apps, schema_editor):
    Conversation = apps.get_model("chat", "Conversation")
    keys = Conversation.objects.exclude(session_key="").values_list("session_key", flat=True).distinct()
    for key in list(keys.iterator()):
        Conversation.objects.filter(session_key=key).update(visitor=visitor_hash(key))


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="visitor",
            field=models.CharField(
                blank=True, db_index=True, help_text="keyed hash of the anonymous owner's session key", max_length=32
            ),
        ),
        migrations.RunPython(hash_session_keys, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField(
            model_name="conversation",
            name="session_key",
        ),
    ]
