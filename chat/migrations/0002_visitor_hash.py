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
    replace_keys_by_hashes(schema_editor, Conversation._meta.db_table)


BATCH = 1000  # session keys per UPDATE


def replace_keys_by_hashes(schema_editor, table):
    """Set every row's visitor to the hash of its session key: the distinct keys are hashed here (HMAC under
    SECRET_KEY, which SQL cannot compute), then one UPDATE per BATCH keys joins the rows to their hashes.

    A few statements whatever the table's size (UPDATE ... FROM: PostgreSQL, SQLite 3.33+).
    """
    table = schema_editor.quote_name(table)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT session_key FROM {table} WHERE session_key <> ''")
        keys = [key for (key,) in cursor.fetchall()]
        for i in range(0, len(keys), BATCH):
            batch = keys[i:i + BATCH]
            values = ", ".join(["(%s, %s)"] * len(batch))
            cursor.execute(
                f"UPDATE {table} SET visitor = hashes.visitor FROM "
                f"(SELECT column1 AS session_key, column2 AS visitor FROM (VALUES {values}) AS v) AS hashes "
                f"WHERE {table}.session_key = hashes.session_key",
                [value for key in batch for value in (key, visitor_hash(key))],
            )


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
