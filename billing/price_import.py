"""Read price lists (LiteLLM's JSON or a simple CSV) and add them to the price table without rewriting history."""

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing.models import MILLION, ModelPrice

RATE_PLACES = Decimal("0.000001")  # ModelPrice keeps six decimal places per million tokens
CSV_FIELDS = ["model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok"]


class PriceFileError(Exception):
    """A price file that cannot be read; the message names the file and, when known, the line."""


@dataclass(frozen=True)
class Offer:
    """One model's rates from a price file, USD per million tokens."""

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    effective_from: datetime | None = None

    def same_rates(self, price):
        """Return True when `price` charges exactly these rates."""
        return (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok) == (
            self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok
        )


@dataclass
class Outcome:
    """What an import did, model ids by fate."""

    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (name, reason)


class TooPrecise(ValueError):
    """A rate that the price table cannot hold without rounding."""


def per_million(per_token):
    """Return a per-token cost (a Decimal from the JSON) as the exact rate per million tokens."""
    if per_token is None:
        return None
    rate = Decimal(per_token) * MILLION
    if rate != rate.quantize(RATE_PLACES):
        raise TooPrecise(f"{rate} $/Mtok needs more than 6 decimal places")
    return rate.quantize(RATE_PLACES)


def rate(text, name, where):
    """Return a CSV rate as a Decimal, or raise PriceFileError saying where it was."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise PriceFileError(f"{where}: {name} must be a number; got {text!r}.") from None
    if not value.is_finite() or value < 0:
        raise PriceFileError(f"{where}: {name} must be a positive number; got {text!r}.")
    if value != value.quantize(RATE_PLACES):
        raise PriceFileError(f"{where}: {name} has more than 6 decimal places; got {text!r}.")
    return value.quantize(RATE_PLACES)


def read(path):
    """Return (offers, skipped) from a LiteLLM JSON file, or a CSV file when its name ends in .csv."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PriceFileError(f"{path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read it ({e}).") from None
    if path.suffix.lower() == ".csv":
        return read_csv(text, path), []
    return read_litellm(text, path)


def read_litellm(text, path):
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
            model = key if "/" in key else f"{entry.get('litellm_provider') or 'unknown'}/{key}"
            try:
                offers.append(Offer(
                    model, per_million(entry["input_cost_per_token"]), per_million(entry["output_cost_per_token"]),
                    per_million(entry.get("cache_read_input_token_cost")),
                ))
            except TooPrecise as e:
                skipped.append((key, str(e)))
            except (InvalidOperation, TypeError, ValueError):
                skipped.append((key, "a cost is not a number"))
    return offers, skipped


def read_csv(text, path):
    """Return offers from `model,input_per_mtok,output_per_mtok,cached_input_per_mtok[,effective_from]`."""
    reader = csv.reader(text.splitlines())
    offers = []
    for line, cells in enumerate(reader, start=1):
        if not cells or cells[0].strip().startswith("#") or (line == 1 and cells[0].strip() == "model"):
            continue
        where = f"{path}:{line}"
        if len(cells) not in (4, 5):
            raise PriceFileError(f"{where}: expected {','.join(CSV_FIELDS)}[,effective_from]; got {len(cells)} columns.")
        model = cells[0].strip()
        if "/" not in model:
            raise PriceFileError(f"{where}: model {model!r} is not of the form provider/model.")
        cached = cells[3].strip()
        offers.append(Offer(
            model, rate(cells[1], "input_per_mtok", where), rate(cells[2], "output_per_mtok", where),
            rate(cached, "cached_input_per_mtok", where) if cached else None,
            instant(cells[4], where) if len(cells) == 5 and cells[4].strip() else None,
        ))
    return offers


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


@transaction.atomic
def apply(offers, skipped=(), now=None):
    """Add each offer as a new price row unless the price in force then is the same; return the Outcome."""
    now = now or timezone.now()
    outcome = Outcome(skipped=list(skipped))
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
            ModelPrice.objects.create(
                model=offer.model, input_per_mtok=offer.input_per_mtok, output_per_mtok=offer.output_per_mtok,
                cached_input_per_mtok=offer.cached_input_per_mtok, effective_from=effective_from,
            )
            (outcome.added if current is None else outcome.changed).append(offer.model)
    return outcome
