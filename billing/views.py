"""The billing dashboard in the admin (spend, speed, who leaves), and a signed-in person's own usage page."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone

from billing import charts, dashboard, personal
from chat.figures import shows_usage


def dashboard_view(request):
    """Show the dashboard's charts and tables for the period, model and person in the query."""
    if not request.user.has_perm("billing.view_usagerecord"):
        raise PermissionDenied  # admin_view refuses non-staff; this refuses staff without the permission
    context = {
        **admin.site.each_context(request), "title": "Billing dashboard", "query": request.GET,
        "time_zone": timezone.get_current_timezone_name(),
    }
    try:
        filters = dashboard.Filters.from_query(request.GET)
    except ValueError as e:
        return render(request, "admin/billing/dashboard.html", {**context, "error": str(e)}, status=400)
    figures = dashboard.figures(filters)
    models = sorted(set(settings.CHAT_MODELS) | set(figures["models"]) | ({filters.model} - {""}))
    context.update(figures, filters=filters, charts=draw(figures), models_known=models)
    return render(request, "admin/billing/dashboard.html", context)


def draw(f):
    """Return the SVG of each chart, drawn from the same figures as its table."""
    days = f["days"]
    cost_series = [(model, [row["costs"][i] for row in f["cost_rows"]]) for i, model in enumerate(f["models"])]
    return {
        "cost": charts.bars("chart-cost", "Cost per day, stacked by model (USD)", days, cost_series,
                            fmt=lambda v: f"${v:,.4f}"),
        "requests": charts.bars("chart-requests", "Requests per day", days,
                                [("requests", [row["requests"] for row in f["request_rows"]])]),
        "tokens": charts.bars("chart-tokens", "Tokens per day", days, [
            ("prompt", [row["prompt_tokens"] for row in f["token_rows"]]),
            ("completion", [row["completion_tokens"] for row in f["token_rows"]]),
        ]),
        "ttft": charts.lanes("chart-ttft", "Time to first token per model, p50 and p95 marked", f["ttft_bins"], [
            (row["model"], row["bins"], dashboard.bin_position(row["p50"]), dashboard.bin_position(row["p95"]))
            for row in f["ttft_rows"]
        ]),
        "abandonment": charts.bars(
            "chart-abandonment", "Abandonment rate by wait for the first token, before it vs while streaming",
            [row["bucket"] for row in f["abandonment_rows"]], [
                ("before first token", [share(row, "before_first_token") for row in f["abandonment_rows"]]),
                ("while streaming", [share(row, "streaming") for row in f["abandonment_rows"]]),
            ], fmt=lambda v: f"{v:.1%}",
        ),
        "people": charts.bars("chart-people", "Top people by cost (USD)", [row["who"] for row in f["people_rows"]],
                              [("cost", [row["cost"] for row in f["people_rows"]])], fmt=lambda v: f"${v:,.4f}"),
        "refusals": charts.bars(
            "chart-refusals", "Refusals per day (rate limit, budget)", days, [
                (kind, [f["refusals"].get((day, kind), 0) for day in days])
                for kind in sorted({kind for _, kind in f["refusals"]}) or ["rate_limited", "budget_exceeded"]
            ],
        ),
    }


def share(row, column):
    """Return a bucket's count in `column` as a share of its requests."""
    return row[column] / row["requests"] if row["requests"] else 0


@login_required
def my_usage(request):
    """Show the signed-in person what they spent today and this month, and their daily budget left."""
    if not shows_usage(request.user):  # CHAT_SHOW_USAGE: who may see token counts and cost
        raise Http404("Usage is not shown on this site.")
    return render(request, "billing/my_usage.html", personal.spending(request.user))
