"""Read price lists (LiteLLM's JSON or a simple CSV) and add them to the price table without rewriting history."""

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing.models import MILLION, ModelPrice, model_family

RATE_PLACES = Decimal("0.000001")  # ModelPrice keeps six decimal places per million tokens
CSV_FIELDS = ["model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok"]
CSV_OPTIONAL = ["cache_write_per_mtok", "effective_from"]
RATES = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")


class PriceFileError(Exception):
    """A price file that cannot be read; the message names the file and, when known, the line."""


@dataclass(frozen=True)
class Offer:
    """One model's rates from a price file, USD per million tokens; `key` is how the file named it."""

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None = None
    effective_from: datetime | None = None
    key: str = ""
    spelled_out: bool = True  # the key is the model id itself, not a name the provider prefix was added to

    def same_rates(self, price):
        """Return True when `price` charges exactly these rates."""
        return all(getattr(price, name) == getattr(self, name) for name in RATES)

    def rates(self):
        """Return the rates as ModelPrice's fields."""
        return {name: getattr(self, name) for name in RATES}


@dataclass
class Outcome:
    """What an import did (or, in a dry run, would do), model ids by fate."""

    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (name, reason)
    collisions: list = field(default_factory=list)  # (model id, key used, [keys set aside])
    rounded: list = field(default_factory=list)  # (key, exact $/Mtok, stored $/Mtok)
    left_out: int = 0  # offers for models neither configured nor priced (--only-configured)


class Rounder:
    """Round rates to the table's six places per million tokens, noting each one that changed."""

    def __init__(self):
        self.rounded = []

    def __call__(self, key, value):
        """Return `value` ($/Mtok) rounded half-even to six places; note it when rounding changed it."""
        if value is None:
            return None
        stored = value.quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN)
        if stored != value:
            self.rounded.append((key, value, stored))
        return stored


def per_million(per_token):
    """Return a per-token cost (a Decimal from the JSON) as the exact rate per million tokens."""
    if per_token is None:
        return None
    if isinstance(per_token, bool) or not isinstance(per_token, (int, Decimal)):
        raise TypeError(f"not a number: {per_token!r}")
    rate = Decimal(per_token) * MILLION
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"not a positive number: {per_token!r}")
    return rate


def rate(text, name, where):
    """Return a CSV rate as a Decimal, or raise PriceFileError saying where it was."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise PriceFileError(f"{where}: {name} must be a number; got {text!r}.") from None
    if not value.is_finite() or value < 0:
        raise PriceFileError(f"{where}: {name} must be a positive number; got {text!r}.")
    return value


def read(path):
    """Return (offers, skipped, rounded) from a LiteLLM JSON file, or a CSV file when its name ends in .csv."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PriceFileError(f"{path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read it ({e}).") from None
    rounder = Rounder()
    if path.suffix.lower() == ".csv":
        return read_csv(text, path, rounder), [], rounder.rounded
    offers, skipped = read_litellm(text, path, rounder)
    return offers, skipped, rounder.rounded


def read_litellm(text, path, rounder):
    """Return (offers, skipped) from LiteLLM's model_prices_and_context_window.json format."""
    try:
        entries = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as e:
        raise PriceFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg}).") from None
    if not isinstance(entries, dict):
        raise PriceFileError(f"{path}: expected a JSON object of models, as in LiteLLM's price list.")
    offers, skipped = [], []
    for key, entry in entries.items():
        if key == "sample_spec":
            continue
        if not isinstance(entry, dict):
            skipped.append((key, "not an object"))
        elif entry.get("mode") != "chat":
            skipped.append((key, f"mode {entry.get('mode')!r} is not chat"))
        elif entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            skipped.append((key, "no per-token input and output cost"))
        else:
            spelled_out = "/" in key
            model = key if spelled_out else f"{entry.get('litellm_provider') or 'unknown'}/{key}"
            try:
                costs = [per_million(entry.get(name)) for name in LITELLM_COSTS]
            except (InvalidOperation, TypeError, ValueError):
                skipped.append((key, "a cost is not a positive number"))
                continue
            offers.append(Offer(model, *(rounder(key, cost) for cost in costs), key=key, spelled_out=spelled_out))
    return offers, skipped


# LiteLLM's per-token costs, in the order of Offer's rates.
LITELLM_COSTS = (
    "input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost", "cache_creation_input_token_cost",
)


def read_csv(text, path, rounder):
    """Return offers from `model,input_per_mtok,output_per_mtok,cached_input_per_mtok[,effective_from]`.

    A header line may name the optional columns in another order, and add cache_write_per_mtok.
    """
    reader = csv.reader(text.splitlines())
    columns, offers = CSV_FIELDS + ["effective_from"], []
    for line, cells in enumerate(reader, start=1):
        cells = [cell.strip() for cell in cells]
        if not cells or cells[0].startswith("#"):
            continue
        where = f"{path}:{line}"
        if line == 1 and cells[0] == "model":
            columns = header(cells, where)
            continue
        if not len(CSV_FIELDS) <= len(cells) <= len(columns):
            raise PriceFileError(f"{where}: expected {','.join(columns)}; got {len(cells)} columns.")
        values = dict(zip(columns, cells))
        model = values["model"]
        if "/" not in model:
            raise PriceFileError(f"{where}: model {model!r} is not of the form provider/model.")
        rates = {
            name: rounder(model, rate(values[name], name, where))
            for name in RATES if values.get(name) or name in ("input_per_mtok", "output_per_mtok")
        }
        when = values.get("effective_from")
        offers.append(Offer(
            model, rates["input_per_mtok"], rates["output_per_mtok"], rates.get("cached_input_per_mtok"),
            rates.get("cache_write_per_mtok"), instant(when, where) if when else None, key=model,
        ))
    return offers


def header(cells, where):
    """Return the columns a CSV header names, or raise PriceFileError when it names unknown ones."""
    if cells[:len(CSV_FIELDS)] != CSV_FIELDS or not set(cells[len(CSV_FIELDS):]) <= set(CSV_OPTIONAL):
        raise PriceFileError(
            f"{where}: the header must be {','.join(CSV_FIELDS)} then any of {','.join(CSV_OPTIONAL)}; "
            f"got {','.join(cells)}."
        )
    return cells if cells != CSV_FIELDS else CSV_FIELDS + ["effective_from"]  # the original header, unchanged


def instant(text, where):
    """Return an aware datetime from YYYY-MM-DD or an ISO datetime, or raise PriceFileError."""
    text = text.strip()
    try:
        value = parse_datetime(text) or (parse_date(text) and datetime.combine(parse_date(text), time.min))
    except ValueError:
        value = None
    if not value:
        raise PriceFileError(f"{where}: effective_from must be YYYY-MM-DD or an ISO datetime; got {text!r}.")
    return value if timezone.is_aware(value) else timezone.make_aware(value)


def resolve_collisions(offers):
    """Return one offer per (model, effective_from) and the collisions resolved, by the documented rule.

    LiteLLM lists some models under two keys (`gemini/gemini-exp-1206` and `gemini-exp-1206` with provider
    gemini), sometimes at different rates. The key that spells the model id itself wins over a key the
    provider prefix was added to; between keys of equal standing, the first in the file wins. Either way
    the choice does not depend on the database, so importing the same file twice changes nothing.
    """
    chosen, rivals = {}, {}
    for offer in offers:
        slot = (offer.model, offer.effective_from)
        best = chosen.get(slot)
        if best is None:
            chosen[slot] = offer
            continue
        if offer.spelled_out and not best.spelled_out:
            chosen[slot], offer = offer, best
        rivals.setdefault(slot, []).append(offer)
    collisions = [
        (chosen[slot].model, chosen[slot].key, [o.key for o in lost if not o.same_rates(chosen[slot])])
        for slot, lost in rivals.items()
    ]
    return list(chosen.values()), [c for c in collisions if c[2]]


def configured_or_priced(offers):
    """Return the offers for models in CHAT_MODELS (or their dated snapshots' family) or already priced."""
    wanted = set(settings.CHAT_MODELS) | set(ModelPrice.objects.values_list("model", flat=True).distinct())
    return [offer for offer in offers if offer.model in wanted or model_family(offer.model) in wanted]


def apply(offers, skipped=(), now=None, only_configured=False, dry_run=False, rounded=()):
    """Add each offer as a new price row unless the price in force then is the same; return the Outcome.

    With `dry_run`, the rows are added and then rolled back: the Outcome says what a real run would do.
    """
    offers, collisions = resolve_collisions(offers)
    outcome = Outcome(skipped=list(skipped), collisions=collisions)
    if only_configured:
        kept = configured_or_priced(offers)
        outcome.left_out, offers = len(offers) - len(kept), kept
    names = {offer.key for offer in offers}
    outcome.rounded = [r for r in rounded if r[0] in names]
    with transaction.atomic():
        add(offers, outcome, now or timezone.now())
        if dry_run:
            transaction.set_rollback(True)
    return outcome


def add(offers, outcome, now):
    """Add the offers whose rates differ from the price in force at their start; note each one's fate."""
    for offer in offers:
        effective_from = offer.effective_from or now
        current = (
            ModelPrice.objects.filter(model=offer.model, effective_from__lte=effective_from)
            .order_by("-effective_from").first()
        )
        if current is not None and offer.same_rates(current):
            outcome.unchanged.append(offer.model)
        elif current is not None and current.effective_from == effective_from:
            outcome.skipped.append((offer.model, f"a different price already starts at {effective_from:%Y-%m-%d %H:%M}"))
        else:
            ModelPrice.objects.create(model=offer.model, effective_from=effective_from, **offer.rates())
            (outcome.added if current is None else outcome.changed).append(offer.model)
