from datetime import datetime, timezone
from decimal import Decimal

import pytest

from billing.models import ModelPrice, RollupSpan, UsageRecord
from tests.billing.conftest import DAY1, make_record

pytestmark = pytest.mark.django_db


def price(model, input_rate, output_rate, cached_rate=None, effective_from=datetime(2025, 1, 1, tzinfo=timezone.utc)):
    return ModelPrice.objects.create(
        model=model, input_per_mtok=Decimal(input_rate), output_per_mtok=Decimal(output_rate),
        cached_input_per_mtok=None if cached_rate is None else Decimal(cached_rate), effective_from=effective_from,
    )


def test_it_ships_default_prices():
    mini = ModelPrice.objects.in_force("openai/gpt-4.1-mini")
    assert (mini.input_per_mtok, mini.output_per_mtok, mini.cached_input_per_mtok) == (
        Decimal("0.40"), Decimal("1.60"), Decimal("0.10")
    )
    assert ModelPrice.objects.in_force("demo/assistant").cost(1000, 1000) == Decimal(0)
    sonnet = ModelPrice.objects.in_force("anthropic/claude-sonnet-4-5")
    assert (sonnet.input_per_mtok, sonnet.output_per_mtok) == (Decimal("3"), Decimal("15"))


def test_it_charges_cached_tokens_at_the_cached_rate():
    p = price("acme/big", "2.00", "8.00", "0.50")
    # 1000 prompt tokens of which 400 cached: 600 * 2 + 400 * 0.5 + 100 * 8 = 2200 per million.
    assert p.cost(1000, 100, cached_tokens=400) == Decimal("0.0022000000")


def test_it_charges_cached_tokens_at_the_input_rate_without_a_cached_rate():
    p = price("acme/plain", "2.00", "8.00")
    assert p.cost(1000, 0, cached_tokens=400) == Decimal("0.0020000000")


def test_it_keeps_a_records_cost_when_the_price_changes_later():
    price("acme/big", "2.00", "8.00", "0.50")
    before = make_record(model="acme/big", prompt_tokens=1000, completion_tokens=1000)
    price("acme/big", "4.00", "16.00", "1.00", effective_from=datetime(2025, 7, 1, tzinfo=timezone.utc))
    after = make_record(datetime(2025, 7, 2, tzinfo=timezone.utc), model="acme/big", prompt_tokens=1000, completion_tokens=1000)
    before.refresh_from_db()
    assert before.cost_usd == Decimal("0.0100000000")
    assert after.cost_usd == Decimal("0.0200000000")


def test_it_resolves_a_dated_model_to_its_family():
    record = make_record(model="openai/gpt-4.1-mini-2025-04-14", prompt_tokens=1_000_000, completion_tokens=0)
    assert record.price == ModelPrice.objects.in_force("openai/gpt-4.1-mini")
    assert record.cost_usd == Decimal("0.4000000000")


def test_it_leaves_an_unpriced_model_with_a_null_cost():
    record = make_record(model="local/llama-3.1-8b")
    record.refresh_from_db()
    assert record.price is None
    assert record.cost_usd is None


def test_it_prices_seven_tokens_exactly():
    record = make_record(model="openai/gpt-4.1-mini", started=DAY1, prompt_tokens=0, completion_tokens=7)
    record.refresh_from_db()
    # 7 * 1.60 / 1,000,000 = 0.0000112: a float would not keep it.
    assert record.cost_usd == Decimal("0.0000112000")
    assert str(UsageRecord.objects.get(pk=record.pk).cost_usd) == "0.0000112000"


# Which price wins when several rows match (issue 17): exact id, then its dated family, then the
# same model under another provider prefix; the newest row in force at the request's start.


def test_it_prefers_the_exact_id_to_the_family_and_to_another_prefix():
    price("acme/m", "1", "1")
    price("acme/m-2025-01-01", "2", "2")
    price("other/m-2025-01-01", "3", "3", effective_from=datetime(2025, 6, 1, tzinfo=timezone.utc))
    assert ModelPrice.objects.in_force("acme/m-2025-01-01").input_per_mtok == Decimal("2")


def test_it_falls_back_to_the_family_of_a_dated_id():
    price("acme/m", "1", "1")
    price("other/m-2025-01-01", "3", "3", effective_from=datetime(2025, 6, 1, tzinfo=timezone.utc))
    assert ModelPrice.objects.in_force("acme/m-2025-01-01").input_per_mtok == Decimal("1")


def test_it_falls_back_to_the_same_model_under_another_prefix():
    price("openai/acme-model", "4", "5")
    assert ModelPrice.objects.in_force("azure/acme-model").input_per_mtok == Decimal("4")
    assert ModelPrice.objects.in_force("azure/acme-model-2025-01-01").input_per_mtok == Decimal("4")
    assert ModelPrice.objects.in_force("azure/acme-mod") is None


def test_it_takes_the_newest_price_in_force_at_the_start():
    price("acme/m", "1", "1", effective_from=datetime(2025, 1, 1, tzinfo=timezone.utc))
    price("acme/m", "2", "2", effective_from=datetime(2025, 3, 1, tzinfo=timezone.utc))
    price("acme/m", "3", "3", effective_from=datetime(2025, 5, 1, tzinfo=timezone.utc))
    at = datetime(2025, 4, 1, tzinfo=timezone.utc)
    assert ModelPrice.objects.in_force("acme/m", at).input_per_mtok == Decimal("2")
    assert ModelPrice.objects.in_force("acme/m", datetime(2024, 12, 31, tzinfo=timezone.utc)) is None


def test_it_prices_a_three_part_id_by_its_whole_model_name():
    price("together/Qwen/Qwen2.5-7B-Instruct", "0.3", "0.3")
    price("Qwen2.5-7B-Instruct", "9", "9")
    assert ModelPrice.objects.in_force("vllm/Qwen/Qwen2.5-7B-Instruct").input_per_mtok == Decimal("0.3")


def test_it_rounds_a_cost_to_ten_decimal_places_half_even():
    p = price("acme/fine", "0.123456", "0.000050")
    assert p.cost(1, 0) == Decimal("0.0000001235")  # 0.000000123456
    assert p.cost(0, 1) == Decimal("0E-10")  # 0.00000000005: half to even
    assert p.cost(0, 3) == Decimal("0.0000000002")  # 0.00000000015: half to even


def test_it_gives_a_signed_in_visitor_only_their_own_anonymous_records(alice, bob):
    mine, theirs = make_record(visitor="visitor-mine"), make_record(visitor="visitor-theirs")
    bobs = make_record(visitor="visitor-mine", user=bob)  # already someone's: stays theirs
    assert UsageRecord.objects.adopt("visitor-mine", alice) == 1
    owners = {r.pk: (r.user_id, r.visitor) for r in UsageRecord.objects.all()}
    assert owners == {mine.pk: (alice.pk, ""), theirs.pk: (None, "visitor-theirs"), bobs.pk: (bob.pk, "visitor-mine")}


def test_it_charges_every_prompt_token_at_the_input_rate_when_no_cache_is_named():
    p = price("acme/cached", "3", "15", cached_rate="0.3")
    p.cache_write_per_mtok = Decimal("3.75")
    assert p.cost(1000, 100) == Decimal("0.0045000000")  # 1000 x $3 + 100 x $15, per million


def test_it_counts_no_more_cache_writes_than_the_prompt_left_after_cache_reads():
    p = price("acme/capped", "3", "15", cached_rate="0.3")
    p.cache_write_per_mtok = Decimal("3.75")
    # 100 prompt tokens, 80 read from the cache: at most 20 written, none left at the input rate.
    assert p.cost(100, 0, cached_tokens=80, cache_write_tokens=50) == Decimal("0.0000990000")  # 80 x 0.3 + 20 x 3.75


def test_a_rollup_span_names_its_times_its_zone_and_whether_it_is_stale():
    hour = RollupSpan(day=datetime(2026, 3, 29).date(), time_zone="Europe/Paris",
                      starts=datetime(2026, 3, 29, 0, 0, tzinfo=timezone.utc),
                      ends=datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc))
    assert str(hour) == "2026-03-29 00:00-2026-03-29 01:00 (Europe/Paris)"
    hour.stale = True
    assert str(hour) == "2026-03-29 00:00-2026-03-29 01:00 (Europe/Paris) stale"


# in_force is one hand-written query (billing.models._in_force_sql): the same match the ORM made.


def test_it_matches_another_prefix_by_the_literal_name_not_as_a_pattern():
    # LIKE's wildcards in a model name are escaped: `_` and `%` stand for themselves.
    price("other/mx1", "1", "1")
    price("other/a%b", "2", "2")
    price("other/back\\slash", "3", "3")
    assert ModelPrice.objects.in_force("acme/m_1") is None
    assert ModelPrice.objects.in_force("acme/a%") is None
    assert ModelPrice.objects.in_force("acme/%b") is None
    assert ModelPrice.objects.in_force("acme/a%b").input_per_mtok == Decimal("2")
    assert ModelPrice.objects.in_force("acme/back\\slash").input_per_mtok == Decimal("3")
    assert ModelPrice.objects.in_force("acme/backXslash") is None


def test_it_returns_a_price_with_exact_decimals_and_an_aware_start_in_one_query(django_assert_num_queries):
    p = price("acme/m", "0.123456", "7.5", cached_rate="0.000001",
              effective_from=datetime(2025, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
    with django_assert_num_queries(1):
        found = ModelPrice.objects.in_force("acme/m")
    assert found.pk == p.pk
    assert [type(v) for v in (found.input_per_mtok, found.output_per_mtok, found.cached_input_per_mtok)] == [Decimal] * 3
    assert (found.input_per_mtok, found.cached_input_per_mtok, found.cache_write_per_mtok) == (
        Decimal("0.123456"), Decimal("0.000001"), None)
    assert found.effective_from == datetime(2025, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert found.cost(1_000_000, 0) == Decimal("0.1234560000")


def test_it_applies_a_price_added_after_a_lookup_at_once():
    price("acme/m", "1", "1", effective_from=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert ModelPrice.objects.in_force("acme/m").input_per_mtok == Decimal("1")
    price("acme/m", "2", "2", effective_from=datetime(2025, 2, 1, tzinfo=timezone.utc))
    assert ModelPrice.objects.in_force("acme/m").input_per_mtok == Decimal("2")
    ModelPrice.objects.filter(model="acme/m", input_per_mtok=2).update(input_per_mtok=Decimal("3"))
    assert ModelPrice.objects.in_force("acme/m").input_per_mtok == Decimal("3")
    assert make_record(model="acme/m", prompt_tokens=1_000_000, completion_tokens=0).cost_usd == Decimal("3.0000000000")
