"""A signed-in person's own spending: today and this month (UTC, as the daily budget counts), and what is left."""

from datetime import datetime, time, timezone

from django.conf import settings
from django.db.models import Count, Q

from billing import reports
from billing.models import UsageRecord


def spending(user, now=None):
    """Return this person's cost and requests today and this month, and the daily budget left (None: no budget)."""
    now = now or datetime.now(timezone.utc)
    today = datetime.combine(now.date(), time.min, timezone.utc)  # the budget's day: chat.limits.check_budget
    month = today.replace(day=1)
    today_only = Q(started__gte=today)
    found = UsageRecord.objects.order_by().filter(user=user, started__gte=month).aggregate(
        month_requests=Count("id"), month_cost=reports.cost_sum(),
        today_requests=Count("id", filter=today_only), today_cost=reports.cost_sum(filter=today_only),
    )
    budget = settings.CHAT_DAILY_BUDGET_USD
    spent_today = reports.as_cost(found["today_cost"])
    return {
        "today_cost": spent_today, "today_requests": found["today_requests"],
        "month_cost": reports.as_cost(found["month_cost"]), "month_requests": found["month_requests"],
        "budget": budget, "remaining": None if budget is None else max(budget - spent_today, 0),
        "day_start": today, "month_start": month,
    }
