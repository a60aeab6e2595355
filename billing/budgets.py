"""Daily budgets that cannot be overshot: reserve a request's worst case, settle it to the real cost.

How to use it (the chat relay does this; an API endpoint with per-key budgets does the same):

    from billing import budgets

    scopes = [budgets.Scope("person", owner_key, Decimal("0.50")),
              budgets.Scope("site", "", settings.CHAT_SITE_DAILY_BUDGET_USD),
              budgets.Scope("apikey", str(key.pk), key.daily_budget_usd)]   # None limits are ignored
    try:
        reservation = budgets.reserve(scopes, worst_case_usd)   # before any upstream request
    except budgets.BudgetExceeded as exc:
        ...  # exc.scope.kind names the budget; str(exc) is the message a person sees
    ...
    with transaction.atomic():
        record = UsageRecord.record(...)
        budgets.settle(reservation, record.cost_usd)   # in the record's transaction: spent and
                                                       # released together, or neither
    # or, when no record will be written at all:
    budgets.release(reservation)

A scope is (kind, key, limit_usd): any kind works ("person", "address", "site", "apikey", …); the key
names who inside the kind and is stored only as a keyed hash. Spending is counted per UTC day.

Why the database and not Redis: the settle must commit with the usage record, or a crash between
the two would count a request twice or not at all; and the database is the one store every
deployment shares across processes (REDIS_URL is optional). `reserve` locks the scopes' ledger rows
for the length of one short transaction (SELECT … FOR UPDATE on PostgreSQL; on SQLite every
transaction is BEGIN IMMEDIATE, which takes the database's write lock), so two processes can never
both see the same remaining budget. A reservation is a few `BudgetHold` rows that expire after
CHAT_BUDGET_HOLD_SECONDS, so a killed process cannot hold budget forever.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from decimal import Decimal
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

COST_PLACES = Decimal("0.0000000001")


def who_hash(key):
    """Return a keyed hash (HMAC with SECRET_KEY) of who a counter is about: never the raw key."""
    return salted_hmac("chatsite.billing.who", str(key)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget a request counts against: its kind, who inside the kind, and its daily limit in USD."""

    kind: str
    key: str
    limit_usd: Decimal | None


@dataclass(slots=True)
class Reservation:
    """Budget held for one request until it is settled or released."""

    token: uuid.UUID
    scopes: tuple
    amount: Decimal
    day: object  # the UTC date it counts against
    settled: bool = field(default=False)


class BudgetExceeded(Exception):
    """A budget has no room for the request's worst case; `scope` names which."""

    code = "budget_exceeded"

    def __init__(self, scope, committed, message=None):
        self.scope = scope
        self.committed = committed  # spent + held when refused
        super().__init__(message or default_message(scope, committed))


NAMES = {"person": "Your daily budget", "address": "The daily budget for your network address",
         "site": "The site's daily budget", "apikey": "This API key's daily budget"}


def default_message(scope, committed):
    """Return the sentence a person sees when `scope` is full."""
    name = NAMES.get(scope.kind, f"The {scope.kind} daily budget")
    return (f"{name} of ${scope.limit_usd} is used up (${committed.quantize(Decimal('0.0001'))} spent or "
            "reserved by replies in flight). It resets at midnight UTC.")


class BudgetLedger(models.Model):
    """What one scope has spent on one UTC day; its row is the lock that serialises reservations."""

    kind = models.CharField(max_length=16)
    key = models.CharField(max_length=32, help_text="keyed hash of who (see budgets.who_hash)")
    day = models.DateField()
    spent = models.DecimalField(max_digits=20, decimal_places=10, default=Decimal(0))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key", "day"], name="one_ledger_per_scope_day")]

    def __str__(self):
        return f"{self.kind} {self.key[:8]} {self.day}: ${self.spent}"


class BudgetHold(models.Model):
    """The worst case of one request in flight, held against one scope until settled or expired."""

    token = models.UUIDField(db_index=True)
    kind = models.CharField(max_length=16)
    key = models.CharField(max_length=32)
    day = models.DateField()
    amount = models.DecimalField(max_digits=20, decimal_places=10)
    expires = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["kind", "key", "day", "expires"])]


def _pairs(scopes):
    return [(s.kind, who_hash(s.key)) for s in scopes]


def _matching(scopes):
    return reduce(or_, (models.Q(kind=kind, key=key) for kind, key in _pairs(scopes)))


def reserve(scopes, worst_case_usd, *, now=None):
    """Hold `worst_case_usd` against every scope with a limit, atomically; raise BudgetExceeded if one is full.

    Scopes whose limit is None are ignored; with none left this touches no table. Call it inside
    another transaction to make the hold part of it (it is rolled back with it).
    """
    limited = {}
    for scope in scopes:
        if scope.limit_usd is not None:
            limited[(scope.kind, who_hash(scope.key))] = scope
    now = now or timezone.now()
    day = now.astimezone(UTC).date()
    amount = Decimal(worst_case_usd).quantize(COST_PLACES)
    reservation = Reservation(uuid.uuid4(), tuple(limited.values()), amount, day)
    if not limited:
        return reservation
    ordered = sorted(limited)  # one lock order everywhere: no deadlock between two reservations
    with transaction.atomic():
        BudgetLedger.objects.bulk_create(
            [BudgetLedger(kind=kind, key=key, day=day) for kind, key in ordered], ignore_conflicts=True
        )
        rows = BudgetLedger.objects.select_for_update().filter(day=day).filter(_matching(reservation.scopes))
        spent = {(row.kind, row.key): row.spent for row in rows.order_by("kind", "key")}
        live = BudgetHold.objects.filter(day=day, expires__gt=now).filter(_matching(reservation.scopes))
        held = {(h["kind"], h["key"]): h["total"]
                for h in live.values("kind", "key").annotate(total=models.Sum("amount"))}
        for pair in ordered:
            scope = limited[pair]
            committed = spent.get(pair, Decimal(0)) + held.get(pair, Decimal(0))
            if committed + amount > scope.limit_usd:
                raise BudgetExceeded(scope, committed)
        expires = now + timedelta(seconds=settings.CHAT_BUDGET_HOLD_SECONDS)
        BudgetHold.objects.bulk_create(
            [BudgetHold(token=reservation.token, kind=kind, key=key, day=day, amount=amount, expires=expires)
             for kind, key in ordered]
        )
        # Holds left by a killed process no longer count; clear those of these scopes as we pass.
        BudgetHold.objects.filter(expires__lte=now).filter(_matching(reservation.scopes)).delete()
    return reservation


def settle(reservation, actual_usd):
    """Count the request's real cost against its scopes and drop its holds (call it in the record's transaction).

    `actual_usd` None (an unpriced model) counts the whole reservation. Settling twice does nothing.
    """
    if reservation is None or reservation.settled:
        return
    reservation.settled = True
    if not reservation.scopes:
        return
    cost = reservation.amount if actual_usd is None else Decimal(actual_usd).quantize(COST_PLACES)
    with transaction.atomic():
        if cost:
            BudgetLedger.objects.filter(day=reservation.day).filter(_matching(reservation.scopes)).update(
                spent=models.F("spent") + cost
            )
        BudgetHold.objects.filter(token=reservation.token).delete()


def release(reservation):
    """Drop a reservation's holds without spending anything (the request never reached the upstream)."""
    settle(reservation, 0)


def committed(scope, now=None):
    """Return (spent, held) for one scope today: for reports, the admin and tests."""
    now = now or timezone.now()
    day = now.astimezone(UTC).date()
    key = who_hash(scope.key)
    spent = BudgetLedger.objects.filter(kind=scope.kind, key=key, day=day).values_list("spent", flat=True).first()
    held = BudgetHold.objects.filter(kind=scope.kind, key=key, day=day, expires__gt=now).aggregate(
        total=models.Sum("amount"))["total"]
    return Decimal(spent or 0), Decimal(held or 0)
