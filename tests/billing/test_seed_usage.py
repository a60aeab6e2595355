from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.models import AbandonmentEvent, ModelPrice, UsageRecord

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
    assert records.filter(user=None).exclude(session_key="").exists()
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
