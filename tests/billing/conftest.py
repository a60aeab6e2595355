"""Helpers for billing tests: named people and usage records with known values."""

from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.auth import get_user_model

from billing.models import UsageRecord

DAY1 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="password")


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="password")


def make_record(started=DAY1, *, abandonment=None, **fields):
    """Save and return one usage record priced as the relay would price it."""
    values = {
        "model": "openai/gpt-4.1-mini", "status": "completed", "prompt_tokens": 100, "completion_tokens": 50,
        "ttft_ms": 300, "duration_ms": 900,
    }
    values.update(fields)
    return UsageRecord.record(
        abandonment=abandonment, started=started, finished=started + timedelta(milliseconds=values["duration_ms"]),
        **values,
    )
