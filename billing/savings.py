"""What stopping early saved: the output tokens a stopped or disconnected reply did not generate, priced.

An estimate: each reply cut short would otherwise have run to the median length of the same model's
completed replies in the period; the tokens it did not generate are priced at its own output rate.
"""

from decimal import Decimal

from django.db.models import Count

from billing.models import COST_PLACES, MILLION, ModelPrice, UsageRecord
from billing.reports import percentiles_by, records_between

METHOD = (
    "Estimate: a reply cut short (stopped or disconnected) would have run to the median length of the same "
    "model's completed replies in the period; the output tokens it did not generate are priced at its own "
    "output rate. Replies longer than that median save nothing; models with no completed reply are left out."
)
# Whether closing the stream stops the bill is the provider's choice, not ours.
PROVIDER_NOTES = {
    "openrouter": "OpenRouter stops generation and billing on abort only for providers that support stream "
                  "cancellation; the others bill the full generation after a disconnect.",
}
DEFAULT_NOTE = (
    "Assumes {provider} stops generating (and billing) when the connection closes. Some providers and "
    "gateways bill the full generation after a disconnect: for them this saving is not real."
)
COLUMNS = ["model", "cut_short", "median_completion_tokens", "tokens_not_generated", "saved_usd", "unpriced"]
CUT_SHORT = (UsageRecord.Status.STOPPED, UsageRecord.Status.DISCONNECTED)


def note_for(model):
    """Return the billing note for the provider of `model` (`provider/name`)."""
    provider = model.split("/", 1)[0]
    return PROVIDER_NOTES.get(provider, DEFAULT_NOTE.format(provider=provider))


def savings(start=None, end=None, records=None, medians=None, cut=None):
    """Return one row per model with replies cut short: the tokens not generated and what they would have cost.

    `medians` ({model: (median completion tokens,)}) and `cut` (the replies cut short counted per model, price
    and completion tokens: [{"model", "price", "completion_tokens", "n"}]) save reading them again when the
    caller has.
    """
    records = records if records is not None else records_between(start, end)
    if medians is None:
        completed = records.filter(status=UsageRecord.Status.COMPLETED).order_by()
        medians = percentiles_by(completed, "model", "completion_tokens", 50)
    if cut is None:
        cut = records.filter(status__in=CUT_SHORT).order_by().values("model", "price", "completion_tokens")
        cut = list(cut.annotate(n=Count("id")))
    rates = dict(ModelPrice.objects.filter(pk__in={v["price"] for v in cut}).values_list("pk", "output_per_mtok"))
    rows = {}
    for v in cut:
        (median,) = medians.get(v["model"], (None,))
        if median is None:
            continue
        row = rows.setdefault(v["model"], {
            "model": v["model"], "cut_short": 0, "median_completion_tokens": median, "tokens_not_generated": 0,
            "saved": Decimal(0), "unpriced": 0, "note": note_for(v["model"]),
        })
        missing = max(0, median - v["completion_tokens"]) * v["n"]
        row["cut_short"] += v["n"]
        row["tokens_not_generated"] += missing
        if v["price"] is None:
            row["unpriced"] += v["n"]
        else:
            row["saved"] += missing * rates[v["price"]] / MILLION
    for row in rows.values():
        row["saved_usd"] = f"{row.pop('saved').quantize(COST_PLACES):.10f}"
    return [rows[model] for model in sorted(rows)]
