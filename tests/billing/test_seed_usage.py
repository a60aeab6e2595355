from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from billing.models import AbandonmentEvent, ModelPrice, UsageRecord
from tests.billing.conftest import make_record

pytestmark = pytest.mark.django_db


def seed(*args):
    out = StringIO()
    call_command("seed_usage", *args, stdout=out)
    return out.getvalue()


def test_it_seeds_a_realistic_history():
    assert "Created 600 usage records over the last 7 days" in seed("--records", "600", "--days", "7", "--seed", "3")
    records = UsageRecord.objects.all()
    assert records.count() == 600
    assert records.values("model").distinct().count() >= 5
    assert records.filter(cost_usd=None).exists()  # one model has no price
    assert records.filter(status="completed").count() > 450
    abandoned = records.filter(status__in=["stopped", "disconnected"])
    assert AbandonmentEvent.objects.count() == abandoned.count() > 0
    assert records.filter(user=None).exclude(visitor="").exists()
    assert records.exclude(user=None).exists()
    assert records.filter(estimated=True).exists()


def test_it_prices_each_record_with_the_price_in_force():
    seed("--records", "200", "--seed", "1")
    for record in UsageRecord.objects.exclude(cost_usd=None)[:50]:
        price = ModelPrice.objects.in_force(record.model, record.started)
        assert record.price_id == price.pk
        assert record.cost_usd == price.cost(record.prompt_tokens, record.completion_tokens, record.cached_tokens)


def test_it_is_reproducible_from_its_seed():
    seed("--records", "50", "--seed", "9")
    first = list(UsageRecord.objects.order_by("id").values_list("model", "status", "prompt_tokens"))
    UsageRecord.objects.all().delete()
    seed("--records", "50", "--seed", "9")
    assert list(UsageRecord.objects.order_by("id").values_list("model", "status", "prompt_tokens")) == first


def test_it_refuses_zero_records():
    with pytest.raises(CommandError, match="--records must be at least 1"):
        seed("--records", "0")


def test_it_refuses_a_database_with_real_records():
    make_record()
    with pytest.raises(CommandError, match="holds 1 real usage records"):
        seed("--records", "10")
    assert UsageRecord.objects.count() == 1
    seed("--records", "10", "--force")
    assert UsageRecord.objects.count() == 11


def test_it_seeds_again_over_its_own_records_and_clears_only_them():
    seed("--records", "30", "--seed", "1")
    seed("--records", "30", "--seed", "2")  # seeded records are not real: no --force needed
    real = make_record(status="stopped", abandonment={"reason": "stop", "phase": "streaming", "tokens_delivered": 1,
                                                       "elapsed_ms": 10})
    assert "Removed 60 seeded usage records" in seed("--clear")
    assert list(UsageRecord.objects.all()) == [real]
    assert list(AbandonmentEvent.objects.values_list("record_id", flat=True)) == [real.pk]
    assert not get_user_model().objects.filter(username__startswith="seed-user-").exists()


def test_it_dates_each_event_when_its_person_left():
    seed("--records", "400", "--days", "14", "--seed", "4")
    events = AbandonmentEvent.objects.select_related("record")
    assert events.count() > 5
    for event in events:
        assert event.created == event.record.started + timedelta(milliseconds=event.elapsed_ms)
    assert len({event.created.date() for event in events}) > 3
