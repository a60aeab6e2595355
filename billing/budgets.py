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
from django.db import connections, models, router, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from chatsite import rows

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


# reserve and settle run on every reply, on the one database thread: their statements are written
# once per database vendor and number of scopes instead of built by the ORM each time (that was
# ~2.5 ms of a reply's CPU with three budgets), with the parameters prepared by the models' own
# fields and the rows read through the ORM's converters, as the ORM would. The SQL is the ORM's
# own for these lookups (printed by `QuerySet.query`), but for the one statement that reads the
# holds' sum and whether any expired (so the clean-up DELETE runs only when there is something to
# delete).
_SQL = {}


def _sql(connection, name, n):
    """Return statement `name` for `n` scopes on `connection`'s vendor (built once per vendor and n)."""
    key = (connection.vendor, name, n)
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = _build(connection, name, n)
    return sql


def _build(connection, name, n):
    q = connection.ops.quote_name
    ledger, hold = q(BudgetLedger._meta.db_table), q(BudgetHold._meta.db_table)
    scopes = " OR ".join([f"({{t}}.{q('kind')} = %s AND {{t}}.{q('key')} = %s)"] * n)
    if name == "lock":  # the scopes' ledger rows of the day, locked until the transaction ends
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        return (f"SELECT {ledger}.{q('kind')}, {ledger}.{q('key')}, {ledger}.{q('spent')} FROM {ledger}"
                f" WHERE {ledger}.{q('day')} = %s AND ({scopes.format(t=ledger)})"
                f" ORDER BY {ledger}.{q('kind')} ASC, {ledger}.{q('key')} ASC{lock}")
    if name == "held":
        # Per scope: today's live holds' sum, and how many of its holds (of any day) have expired.
        # Params: day, now, now, day, now, pairs.
        cast = "CAST(%s AS NUMERIC)" if connection.vendor == "sqlite" else "%s"
        day, expires = f"{hold}.{q('day')}", f"{hold}.{q('expires')}"
        live = cast % f"SUM(CASE WHEN {day} = %s AND {expires} > %s THEN {hold}.{q('amount')} ELSE NULL END)"
        return (f"SELECT {hold}.{q('kind')}, {hold}.{q('key')}, {live},"
                f" COUNT(CASE WHEN {expires} <= %s THEN 1 ELSE NULL END) FROM {hold}"
                f" WHERE ({day} = %s OR {expires} <= %s) AND ({scopes.format(t=hold)})"
                f" GROUP BY {hold}.{q('kind')}, {hold}.{q('key')}")
    if name == "hold":  # one hold per scope
        columns = ", ".join(q(c) for c in ("token", "kind", "key", "day", "amount", "expires"))
        return f"INSERT INTO {hold} ({columns}) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * n)
    if name == "spend":  # params: cost, day, pairs
        spent = f"{ledger}.{q('spent')}"
        add = (f"CAST(({spent} + (CAST(%s AS NUMERIC))) AS NUMERIC)" if connection.vendor == "sqlite"
               else f"({spent} + %s)")
        return (f"UPDATE {ledger} SET {q('spent')} = {add}"
                f" WHERE ({ledger}.{q('day')} = %s AND ({scopes.format(t=ledger)}))")
    if name == "unhold":
        return f"DELETE FROM {hold} WHERE {hold}.{q('token')} = %s"
    raise ValueError(name)


def reserve(scopes, worst_case_usd, *, now=None):
    """Hold `worst_case_usd` against every scope with a limit, atomically; raise BudgetExceeded if one is full.

    Scopes whose limit is None are ignored; with none left this touches no table. Call it inside
    another transaction to make the hold part of it (it is rolled back with it); it opens no savepoint
    there. A refused reservation holds nothing (it may leave the scopes' empty ledger rows of the day).
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
    n = len(ordered)
    connection = connections[router.db_for_write(BudgetLedger)]
    pairs = [value for pair in ordered for value in pair]
    ledger_day = rows.prep(BudgetLedger, "day", day, connection)
    hold_day = rows.prep(BudgetHold, "day", day, connection)
    when = rows.prep(BudgetHold, "expires", now, connection)
    full = None
    # Joins the caller's transaction (no savepoint: an error rolls the caller back), or is its own.
    with transaction.atomic(using=connection.alias, savepoint=False), connection.cursor() as cursor:
        cursor.execute(_sql(connection, "lock", n), [ledger_day, *pairs])
        locked = cursor.fetchall()
        if len(locked) < n:  # a scope's first reservation of the day: make its row, then lock them all
            BudgetLedger.objects.using(connection.alias).bulk_create(
                [BudgetLedger(kind=kind, key=key, day=day) for kind, key in ordered], ignore_conflicts=True
            )
            cursor.execute(_sql(connection, "lock", n), [ledger_day, *pairs])
            locked = cursor.fetchall()
        read_spent = rows.reader(BudgetLedger._meta.get_field("spent"), connection)
        spent = {(kind, key): read_spent(value) for kind, key, value in locked}
        cursor.execute(_sql(connection, "held", n), [hold_day, when, when, hold_day, when, *pairs])
        read_amount = rows.reader(BudgetHold._meta.get_field("amount"), connection)
        held, expired = {}, 0
        for kind, key, total, stale in cursor.fetchall():
            if total is not None:
                held[(kind, key)] = read_amount(total)
            expired += stale
        for pair in ordered:
            scope = limited[pair]
            committed = spent.get(pair, Decimal(0)) + held.get(pair, Decimal(0))
            if committed + amount > scope.limit_usd:
                full = (scope, committed)
                break
        if full is None:
            expires = rows.prep(BudgetHold, "expires", now + timedelta(seconds=settings.CHAT_BUDGET_HOLD_SECONDS),
                            connection)
            token = rows.prep(BudgetHold, "token", reservation.token, connection)
            held_amount = rows.prep(BudgetHold, "amount", amount, connection)
            params = []
            for kind, key in ordered:
                params += [token, kind, key, hold_day, held_amount, expires]
            cursor.execute(_sql(connection, "hold", n), params)
            if expired:  # holds left by a killed process no longer count; clear those of these scopes as we pass
                BudgetHold.objects.using(connection.alias).filter(expires__lte=now).filter(
                    _matching(reservation.scopes)).delete()
    if full is not None:  # raised once the block has ended: the caller's transaction is left usable
        raise BudgetExceeded(*full)
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
    connection = connections[router.db_for_write(BudgetLedger)]
    # In the caller's transaction with no savepoint (an error rolls it back with the record), or its own.
    with transaction.atomic(using=connection.alias, savepoint=False), connection.cursor() as cursor:
        if cost:
            pairs = [value for pair in _pairs(reservation.scopes) for value in pair]
            cursor.execute(_sql(connection, "spend", len(reservation.scopes)), [
                rows.prep(BudgetLedger, "spent", cost, connection), rows.prep(BudgetLedger, "day", reservation.day, connection),
                *pairs])
        cursor.execute(_sql(connection, "unhold", 0), [rows.prep(BudgetHold, "token", reservation.token, connection)])


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
