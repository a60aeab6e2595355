"""Time the migrations that replace stored session keys by their keyed hash, on a large table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_console_migration SECRET_KEY=x \
        .venv/bin/python bench/visitor_migration.py --rows 200000 --keys 20000

Migrates an empty database to just before chat 0002 and billing 0006, fills chat_conversation and
billing_usagerecord with `rows` rows each over `keys` distinct session keys (in SQL), then times the
forward migration to chat 0002 / billing 0006 and checks every row got its key's hash.
Its database is its own: it is emptied (migrated to zero) first.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402

from chat.visitors import visitor_hash  # noqa: E402

BEFORE = [("chat", "0001_initial"), ("billing", "0005_usage_channel")]
AFTER = [("chat", "0002_visitor_hash"), ("billing", "0006_visitor_hash")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("Run it on PostgreSQL: DATABASE_URL=postgres://…/a_database_of_its_own")
    migrate([("billing", None), ("gateway", None), ("chat", None)])
    migrate(BEFORE)
    with connection.cursor() as cursor:
        key = f"lpad((i %% {args.keys})::text, 32, 'k')"
        cursor.execute(
            f"INSERT INTO chat_conversation (session_key, title, model, created, updated) "
            f"SELECT {key}, 'c', '', now(), now() FROM generate_series(1, %s) AS i", [args.rows])
        cursor.execute(
            f"INSERT INTO billing_usagerecord (request_id, session_key, model, upstream_model, streamed, status, "
            f"finish_reason, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, estimated, "
            f"duration_ms, retries, history_dropped, error, started, finished, channel) "
            f"SELECT gen_random_uuid(), {key}, 'm', '', true, 'completed', '', 1, 1, 0, 0, false, 0, 0, 0, '', "
            f"now(), now(), 'chat' FROM generate_series(1, %s) AS i", [args.rows])
    began = time.perf_counter()
    migrate(AFTER)
    took = time.perf_counter() - began
    with connection.cursor() as cursor:
        sample = f"{7 % args.keys}".rjust(32, "k")
        for table in ("chat_conversation", "billing_usagerecord"):
            cursor.execute(f"SELECT count(*) FROM {table} WHERE visitor = %s", [visitor_hash(sample)])
            (hashed,) = cursor.fetchone()
            expected = args.rows // args.keys + (1 if args.rows % args.keys >= 7 else 0)
            assert hashed == expected, (table, hashed, expected)
    print(f"{args.rows} conversations and {args.rows} usage records over {args.keys} session keys: "
          f"chat 0002 + billing 0006 forward in {took:.1f} s")
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


if __name__ == "__main__":
    main()
