"""The figures line's rules: cost to every digit, speed only where it means something, usage for whom."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser, User

from chat.figures import cost_label, figures, shows_usage, speed_label


def test_it_shows_tiny_costs_with_every_digit():
    assert cost_label(Decimal("0.0000156000")) == "$0.0000156"
    assert cost_label(Decimal("0.0000000001")) == "$0.0000000001"
    assert cost_label(Decimal("1.5000000000")) == "$1.50"
    assert cost_label(Decimal("0E-10")) == "$0.00"
    assert cost_label(None) == "not priced"


def test_it_gives_a_speed_only_for_a_streamed_reply_long_enough_to_measure():
    assert speed_label(completion_tokens=70, ttft_ms=300, duration_ms=2300, streamed=True) == "35.0 tok/s"
    assert speed_label(completion_tokens=70, ttft_ms=300, duration_ms=2300, streamed=False) == ""
    assert speed_label(completion_tokens=1, ttft_ms=300, duration_ms=2300, streamed=True) == ""
    assert speed_label(completion_tokens=90, ttft_ms=300, duration_ms=310, streamed=True) == ""  # one burst
    assert speed_label(completion_tokens=20, ttft_ms=None, duration_ms=400, streamed=True) == "50.0 tok/s"


def test_it_leaves_usage_out_of_the_figures_when_asked():
    row = dict(model="m", prompt_tokens=12, completion_tokens=7, estimated=True, cost_usd=None, ttft_ms=230,
               duration_ms=930, streamed=True)
    assert figures(**row) == {"model": "m", "ttft": "230 ms", "tokens": "≈12 in · 7 out", "speed": "10.0 tok/s",
                              "cost": "not priced"}
    assert figures(**row, usage=False) == {"model": "m", "ttft": "230 ms"}


@pytest.mark.django_db
@pytest.mark.parametrize("mode, anonymous, member, staff", [
    ("all", True, True, True), ("staff", False, False, True), ("none", False, False, False),
])
def test_it_lets_chat_show_usage_decide_who_sees_usage(settings, mode, anonymous, member, staff):
    settings.CHAT_SHOW_USAGE = mode
    assert shows_usage(AnonymousUser()) is anonymous
    assert shows_usage(None) is anonymous
    assert shows_usage(User.objects.create_user("erin")) is member
    assert shows_usage(User.objects.create_user("frank", is_staff=True)) is staff
