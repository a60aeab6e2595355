import csv
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing import abandonment, reports
from billing.models import UsageRecord
from tests.billing.conftest import DAY1, make_record

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def history(alice, bob):
    """Records over three days and four models, some unpriced, some abandoned, from alice, bob and a visitor."""
    stop = {"reason": "stop", "phase": "streaming", "tokens_delivered": 3, "elapsed_ms": 400}
    leave = {"reason": "disconnect", "phase": "before_first_token", "tokens_delivered": 0, "elapsed_ms": 90}
    specs = [
        (0, "openai/gpt-4.1-mini", "completed", alice, "", 120, 1000, 200, None),
        (0, "openai/gpt-4.1-mini", "stopped", alice, "", 250, 300, 3, stop),
        (0, "anthropic/claude-haiku-4-5", "completed", bob, "", 800, 2000, 700, None),
        (1, "local/llama-3.1-8b", "completed", None, "abcdefgh12345678", 90, 500, 100, None),
        (1, "local/llama-3.1-8b", "disconnected", None, "abcdefgh12345678", None, 500, 0, leave),
        (1, "openai/gpt-4.1-mini-2025-04-14", "failed", bob, "", None, 0, 0, None),
        (2, "deepseek/deepseek-chat", "completed", alice, "", 600, 7, 7, None),
        (2, "openai/gpt-4.1-mini", "completed", None, "zyxwvuts98765432", 140, 40, 20, None),
    ]
    for day, model, status, user, session, ttft, prompt, completion, abandonment in specs:
        make_record(
            DAY1 + timedelta(days=day), model=model, status=status, user=user, visitor=session, ttft_ms=ttft,
            prompt_tokens=prompt, completion_tokens=completion, abandonment=abandonment,
        )
    return UsageRecord.objects.all()


@pytest.mark.parametrize("by", reports.GROUPS)
def test_it_reports_totals_equal_to_the_records(history, by):
    rows = json.loads(run("--by", by, "--format", "json"))
    assert sum(r["requests"] for r in rows) == len(history) == 8
    assert sum(r["prompt_tokens"] for r in rows) == sum(r.prompt_tokens for r in history)
    assert sum(r["completion_tokens"] for r in rows) == sum(r.completion_tokens for r in history)
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(r.cost_usd for r in history if r.cost_usd is not None)
    assert sum(r["unpriced"] for r in rows) == 2
    assert sum(r["abandoned"] for r in rows) == 2
    assert all(len(r["cost_usd"].split(".")[1]) == 10 for r in rows)


def test_it_groups_by_model(history):
    rows = {r["group"]: r for r in json.loads(run("--format", "json"))}
    mini = rows["openai/gpt-4.1-mini"]
    assert (mini["requests"], mini["abandoned"], mini["abandonment_rate"]) == (3, 1, 0.3333)
    assert mini["ttft_p50_ms"] == 140 and mini["ttft_p95_ms"] == 250
    llama = rows["local/llama-3.1-8b"]
    assert (llama["unpriced"], llama["cost_usd"]) == (2, "0.0000000000")
    assert llama["ttft_p50_ms"] == 90 and llama["ttft_p95_ms"] == 90
    # 7 input tokens at 0.28 and 7 output at 0.42 per million (the V3.2 price, in force since 2025-09-29)
    # would be 0.0000049; on 2025-06-03 the V3 price was in force: 7 * 0.27 + 7 * 1.10 = 9.59 per million.
    assert rows["deepseek/deepseek-chat"]["cost_usd"] == "0.0000095900"
    assert rows["openai/gpt-4.1-mini-2025-04-14"]["ttft_p50_ms"] is None


def test_it_groups_by_user_and_session(history):
    rows = {r["group"]: r for r in json.loads(run("--by", "user", "--format", "json"))}
    assert set(rows) == {"alice", "bob", "visitor:abcdefgh", "visitor:zyxwvuts"}
    assert rows["alice"]["requests"] == 3
    assert rows["visitor:abcdefgh"]["abandoned"] == 1


def test_it_groups_by_day_and_status(history):
    days = [r["group"] for r in json.loads(run("--by", "day", "--format", "json"))]
    assert days == ["2025-06-01", "2025-06-02", "2025-06-03"]
    statuses = {r["group"]: r["requests"] for r in json.loads(run("--by", "status", "--format", "json"))}
    assert statuses == {"completed": 5, "stopped": 1, "disconnected": 1, "failed": 1}


def test_it_filters_by_inclusive_days(history):
    rows = json.loads(run("--since", "2025-06-02", "--until", "2025-06-02", "--by", "day", "--format", "json"))
    assert [(r["group"], r["requests"]) for r in rows] == [("2025-06-02", 3)]


def test_it_takes_the_last_n_days():
    now = datetime.now(timezone.utc)
    make_record(now - timedelta(hours=1))
    make_record(now - timedelta(days=3))
    rows = json.loads(run("--days", "2", "--format", "json"))
    assert [r["requests"] for r in rows] == [1]


def test_it_computes_nearest_rank_percentiles():
    for ms in [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]:
        make_record(model="acme/known", ttft_ms=ms)
    make_record(model="acme/known", ttft_ms=None, status="failed")
    rows, total = reports.usage_report("model", with_total=True)
    assert (rows[0]["ttft_p50_ms"], rows[0]["ttft_p95_ms"]) == (10, 19)
    assert (total["ttft_p50_ms"], total["ttft_p95_ms"]) == (10, 19)


def test_it_picks_nearest_rank_on_small_sets():
    assert reports.nearest_rank({100: 1}, 95) == 100
    assert reports.nearest_rank({1: 1, 2: 1, 3: 1}, 50) == 2
    assert reports.nearest_rank({1: 1, 2: 1, 3: 1, 4: 1}, 50) == 2
    assert reports.nearest_rank({1: 19, 500: 1}, 95) == 1
    assert reports.nearest_rank({1: 18, 500: 2}, 95) == 500
    assert reports.nearest_rank({}, 50) is None


def test_it_writes_an_aligned_table_with_a_total(history):
    lines = run("--by", "status").splitlines()
    assert lines[0].split()[:3] == ["status", "requests", "prompt_tokens"]
    assert lines[-1].split()[:2] == ["TOTAL", "8"]
    assert set(lines[-2]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1  # every column aligned, numbers right-justified


def test_it_writes_csv_with_a_header(history):
    rows = list(csv.DictReader(StringIO(run("--by", "model", "--format", "csv"))))
    assert list(rows[0]) == [*reports.COLUMNS, "model"]
    assert sum(int(r["requests"]) for r in rows) == 8


def test_it_says_so_when_there_is_nothing():
    assert "No usage records" in run()


@pytest.mark.parametrize("args, message", [
    (["--since", "2025-13-01"], "--since must be today, yesterday, Nd"),
    (["--since", "0d"], "--since Nd must be at least 1"),
    (["--until", "tomorrow"], "--until must be today, yesterday or a date"),
    (["--tz", "Mars/Olympus"], "--tz must be a time zone name"),
    (["--by", "day,day"], "--by takes one or two different groupings"),
    (["--by", "day,model,user"], "--by takes one or two"),
    (["--abandonment", "--savings"], "not allowed with"),
    (["--since", "2025-06-05", "--until", "2025-06-01"], "is after --until"),
    (["--days", "0"], "--days must be at least 1"),
    (["--days", "3", "--since", "2025-06-01"], "either --days or --since"),
])
def test_it_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_it_refuses_an_unknown_grouping():
    with pytest.raises(CommandError):
        run("--by", "planet")


def test_it_lists_the_models_whose_upstream_cost_differs_by_more_than_one_percent():
    # gpt-4.1-mini at 0.40/1.60: 100 prompt + 50 completion tokens cost 0.00012 each.
    make_record(upstream_cost_usd=Decimal("0.00012"))
    make_record(upstream_cost_usd=Decimal("0.000121"))  # 0.4 % apart over the two: agrees
    make_record(model="openai/gpt-4.1", upstream_cost_usd=Decimal("0.0006"))  # ours 0.0006: agrees
    make_record(model="openai/gpt-4.1", upstream_cost_usd=Decimal("0.0007"))  # over both: 7.7 % apart
    make_record(model="openai/gpt-4o")  # no upstream figure: not compared
    out = StringIO()
    call_command("usage_report", "--reconcile", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "2 models with an upstream-reported cost; 1 differ from ours by more than 1 %."
    assert lines[1:] == ["  openai/gpt-4.1: ours 0.0012000000, upstream 0.0013000000 (-7.69 %) over 2 requests"]
    out = StringIO()
    call_command("usage_report", "--reconcile", "--format", "json", stdout=out)
    mini = json.loads(out.getvalue())[1]
    assert mini == {"model": "openai/gpt-4.1-mini", "requests": 2, "cost_usd": "0.0002400000",
                    "upstream_cost_usd": "0.0002410000", "difference_pct": "-0.41", "differs": False}


def test_it_groups_by_day_and_model_with_totals_equal_to_the_records(history):
    rows = json.loads(run("--by", "day,model", "--format", "json"))
    assert len(rows) == 6  # 8 records: day 1's two gpt-4.1-mini records share a cell, as do day 2's llama ones
    for r in rows:
        cell = [rec for rec in history if f"{rec.started:%Y-%m-%d}" == r["day"] and rec.model == r["model"]]
        assert r["group"] == f"{r['day']} / {r['model']}"
        assert r["requests"] == len(cell)
        assert r["prompt_tokens"] == sum(rec.prompt_tokens for rec in cell)
        assert r["completion_tokens"] == sum(rec.completion_tokens for rec in cell)
        assert Decimal(r["cost_usd"]) == sum(rec.cost_usd or 0 for rec in cell)
    assert sum(r["requests"] for r in rows) == len(history)
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(r.cost_usd for r in history if r.cost_usd is not None)
    mini = next(r for r in rows if r["group"] == "2025-06-01 / openai/gpt-4.1-mini")
    assert (mini["abandoned"], mini["abandoned_streaming"], mini["abandoned_before_first_token"]) == (1, 1, 0)
    llama = next(r for r in rows if r["model"] == "local/llama-3.1-8b")
    assert (llama["abandoned"], llama["abandoned_streaming"], llama["abandoned_before_first_token"]) == (1, 0, 1)


def test_it_writes_two_groupings_as_a_table(history):
    lines = run("--by", "status,user").splitlines()
    assert lines[0].split()[:2] == ["status,user", "requests"]
    assert any(line.startswith("completed / alice ") for line in lines)
    assert lines[-1].split()[:2] == ["TOTAL", "8"]


# Local midnight in New York is 04:00 UTC in June: 03:30 UTC is still the day before there.
EDGES = [
    datetime(2025, 6, 2, 3, 30, tzinfo=timezone.utc),  # New York: June 1, 23:30
    datetime(2025, 6, 2, 4, 30, tzinfo=timezone.utc),  # New York: June 2, 00:30
    datetime(2025, 6, 2, 23, 30, tzinfo=timezone.utc),  # New York: June 2; Tokyo: June 3, 08:30
]


def test_it_counts_whole_calendar_days_in_the_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"
    for started in EDGES:
        make_record(started)
    rows = json.loads(run("--by", "day", "--format", "json"))
    assert [(r["group"], r["requests"]) for r in rows] == [("2025-06-01", 1), ("2025-06-02", 2)]
    rows = json.loads(run("--since", "2025-06-02", "--until", "2025-06-02", "--format", "json"))
    assert rows[0]["requests"] == 2
    rows = json.loads(run("--by", "day", "--tz", "Asia/Tokyo", "--format", "json"))
    assert [(r["group"], r["requests"]) for r in rows] == [("2025-06-02", 2), ("2025-06-03", 1)]


def test_it_takes_yesterday_and_the_last_n_whole_days(settings):
    settings.TIME_ZONE = "Europe/Paris"
    today = reports.timezone.localtime().date()
    for back in range(10):  # 00:10 and 23:10 of each of the last ten local days (today's 23:10 may be ahead)
        day = today - timedelta(days=back)
        for hour in (0, 23):
            make_record(datetime(day.year, day.month, day.day, hour, 10, tzinfo=reports.timezone.get_current_timezone()))
    seven = json.loads(run("--days", "7", "--by", "day", "--format", "json"))
    assert [r["group"] for r in seven] == [str(today - timedelta(days=back)) for back in range(6, -1, -1)]
    assert sum(r["requests"] for r in seven) == 14
    assert json.loads(run("--since", "7d", "--by", "day", "--format", "json")) == seven
    yesterday = json.loads(run("--since", "yesterday", "--until", "yesterday", "--by", "day", "--format", "json"))
    assert [(r["group"], r["requests"]) for r in yesterday] == [(str(today - timedelta(days=1)), 2)]
    assert [r["group"] for r in json.loads(run("--since", "today", "--by", "day", "--format", "json"))] == [str(today)]


@pytest.fixture
def waits():
    """Twelve records with known waits for a first token, and how each one ended."""
    stop = {"reason": "stop", "phase": "streaming", "tokens_delivered": 3, "elapsed_ms": 900}
    stop_before = {"reason": "stop", "phase": "before_first_token", "tokens_delivered": 0, "elapsed_ms": 1500}
    leave_before = {"reason": "disconnect", "phase": "before_first_token", "tokens_delivered": 0, "elapsed_ms": 4500}
    leave_mid = {"reason": "disconnect", "phase": "streaming", "tokens_delivered": 9, "elapsed_ms": 3000}
    specs = [  # (ttft_ms, duration_ms, status, abandonment)
        (100, 900, "completed", None), (499, 900, "completed", None), (200, 900, "stopped", stop),
        (500, 900, "completed", None), (999, 1500, "disconnected", leave_mid),
        (None, 1500, "stopped", stop_before), (1200, 3000, "completed", None), (1999, 3000, "completed", None),
        (2500, 3000, "disconnected", leave_mid),
        (None, 4500, "disconnected", leave_before), (5000, 9000, "completed", None),
        (None, 700, "failed", None),  # failed: not counted, the person did not choose
    ]
    for ttft, duration, status, left in specs:
        make_record(ttft_ms=ttft, duration_ms=duration, status=status, abandonment=left)


def test_it_tables_abandonment_by_the_wait_for_a_first_token(waits):
    rows = json.loads(run("--abandonment", "--format", "json"))
    # Counted by hand from the fixture above: 0-0.5 s holds 100, 499, 200; 0.5-1 s holds 500, 999;
    # 1-2 s holds the stop before any token at 1.5 s, 1200, 1999; 2-4 s holds 2500; 4 s+ holds 4.5 s and 5000.
    hand = [
        ("0-0.5 s", 3, 1, 0, 1, 1, 0),
        ("0.5-1 s", 2, 1, 0, 1, 0, 1),
        ("1-2 s", 3, 1, 1, 0, 1, 0),
        ("2-4 s", 1, 1, 0, 1, 0, 1),
        ("4 s+", 2, 1, 1, 0, 0, 1),
    ]
    got = [(r["bucket"], r["requests"], r["abandoned"], r["before_first_token"], r["streaming"], r["stop"],
            r["disconnect"]) for r in rows]
    assert got == hand
    assert [r["abandonment_rate"] for r in rows] == [0.3333, 0.5, 0.3333, 1.0, 0.5]
    table = run("--abandonment").splitlines()
    assert table[0].split() == abandonment.COLUMNS
    assert table[4].split()[:3] == ["2-4", "s", "1"]


def test_it_estimates_savings_from_replies_cut_short():
    for length in (100, 200, 300):  # median 200
        make_record(completion_tokens=length)
    stop = {"reason": "stop", "phase": "streaming", "tokens_delivered": 50, "elapsed_ms": 500}
    make_record(status="stopped", completion_tokens=50, abandonment=stop)  # 150 not generated
    make_record(status="disconnected", completion_tokens=250, abandonment={**stop, "reason": "disconnect"})  # none
    make_record(model="acme/unseen", status="stopped", completion_tokens=5, abandonment=stop)  # no completed reply
    rows = json.loads(run("--savings", "--format", "json"))
    assert len(rows) == 1
    row = rows[0]
    # gpt-4.1-mini outputs cost 1.60 per million: 150 tokens save 0.00024.
    assert (row["model"], row["cut_short"], row["median_completion_tokens"], row["tokens_not_generated"]) == (
        "openai/gpt-4.1-mini", 2, 200, 150,
    )
    assert row["saved_usd"] == "0.0002400000"
    assert "openai stops generating" in row["note"]
    table = run("--savings")
    assert "Estimate: a reply cut short" in table and "- Assumes openai stops generating" in table
