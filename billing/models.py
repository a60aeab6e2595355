"""Prices per model, one usage record per upstream request, and abandonment events."""

import re
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import connections, models, transaction
from django.utils import timezone

from chatsite import rows

MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.0000000001")
# Dated snapshots that upstreams report: gpt-4.1-mini-2025-04-14, claude-3-5-haiku-20241022, …@20250514.
DATED_SUFFIX = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8})|-\d{4})$")


def model_family(model):
    """Return the model id without a dated snapshot suffix (`gpt-4.1-mini-2025-04-14` -> `gpt-4.1-mini`)."""
    return DATED_SUFFIX.sub("", model)


class ModelPriceQuerySet(models.QuerySet):
    def in_force(self, model, at=None):
        """Return the price for `model` in force at `at` (now by default), or None when unpriced.

        The configured id is tried first, then its family (a dated snapshot resolves to the family
        it belongs to), then the same model name under another provider prefix; one query.

        Every usage record runs this, so its SQL is written once per database vendor instead of
        built by the ORM each time (that was ~0.4 ms of a reply's CPU): the same WHERE the ORM
        wrote for `effective_from__lte`, `model__in` and `model__endswith` (the vendor's own
        LIKE operator and cast, the name escaped by the vendor's `prep_for_like_query`), and
        the row chosen comes back through the ORM's converters (as `raw` would; only that row is
        made an instance). It reads the table, not `self`'s filters: call it on the manager.
        """
        family = model_family(model)
        name = family.split("/", 1)[-1]
        connection = connections[self.db]
        field = self.model._meta.get_field("effective_from")
        params = [
            field.get_db_prep_value(at or timezone.now(), connection),
            model, family, name,
            "%%%s" % connection.ops.prep_for_like_query("/" + name),  # as EndsWith.param_pattern
        ]
        with connection.cursor() as cursor:
            cursor.execute(_in_force_sql(self.model, connection), params)
            found = cursor.fetchall()
        if not found:
            return None
        # Only the row chosen becomes a model instance, through the ORM's converters (as raw() made each row).
        fields = self.model._meta.concrete_fields
        at = [f.attname for f in fields].index("model")
        chosen = next((row for wanted in (model, family) for row in found if row[at] == wanted), found[0])
        values = [rows.reader(f, connection)(value) for f, value in zip(fields, chosen, strict=True)]
        return self.model.from_db(self.db, [f.attname for f in fields], values)

    def current_pk(self, model, at=None):
        """Return a subquery of the pk of the price in force at `at` (now) for exactly `model` (an OuterRef)."""
        prices = self.filter(model=model, effective_from__lte=at or timezone.now()).order_by("-effective_from")
        return models.Subquery(prices.values("pk")[:1])


def _in_force_sql(model, connection, cache={}):
    """Return in_force's SELECT for `connection`'s vendor (built once per vendor and table)."""
    key = (connection.vendor, model._meta.db_table)
    sql = cache.get(key)
    if sql is None:
        q = connection.ops.quote_name
        table = q(model._meta.db_table)
        columns = ", ".join(f"{table}.{q(f.column)}" for f in model._meta.concrete_fields)
        column = f"{table}.{q('model')}"
        like = connection.ops.lookup_cast("endswith", "CharField") % column
        sql = cache[key] = (
            f"SELECT {columns} FROM {table} WHERE {table}.{q('effective_from')} <= %s"
            f" AND ({column} IN (%s, %s, %s) OR {like} {connection.operators['endswith'] % '%s'})"
            f" ORDER BY {table}.{q('effective_from')} DESC"
        )
    return sql


class ModelPrice(models.Model):
    model = models.CharField(max_length=200, db_index=True, help_text="provider/model, as in CHAT_MODELS")
    input_per_mtok = models.DecimalField("input $/Mtok", max_digits=14, decimal_places=6)
    output_per_mtok = models.DecimalField("output $/Mtok", max_digits=14, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(
        "cached input $/Mtok", max_digits=14, decimal_places=6, null=True, blank=True,
        help_text="Leave empty to charge cached input at the input rate.",
    )
    cache_write_per_mtok = models.DecimalField(
        "cache write $/Mtok", max_digits=14, decimal_places=6, null=True, blank=True,
        help_text="Prompt tokens written to the cache (Anthropic: 1.25x input). Leave empty for the input rate.",
    )
    effective_from = models.DateTimeField(
        default=timezone.now,
        help_text=(
            "When this price starts. To change a price, add a new row with a new effective_from: "
            "records keep the price that was in force when they started, and history stays visible here."
        ),
    )

    objects = ModelPriceQuerySet.as_manager()

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="one_price_per_instant")]

    def __str__(self):
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"

    def cost(self, prompt_tokens, completion_tokens, cached_tokens=0, cache_write_tokens=0):
        """Return the exact USD cost of a request; cache reads and writes are parts of prompt_tokens."""
        cached = min(cached_tokens or 0, prompt_tokens)
        written = min(cache_write_tokens or 0, prompt_tokens - cached)
        cached_rate = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_rate = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        total = (
            (prompt_tokens - cached - written) * self.input_per_mtok
            + cached * cached_rate
            + written * write_rate
            + completion_tokens * self.output_per_mtok
        ) / MILLION
        return total.quantize(COST_PLACES)


REPORT_COLUMNS = ["ttft_ms", "started", "prompt_tokens", "completion_tokens", "cost_usd"]
REPORT_PREFIX = {"model": ["model"], "status": ["status"], "user": ["user", "visitor"]}


class UsageRecordQuerySet(models.QuerySet):
    def adopt(self, visitor, user):
        """Count an anonymous visitor's requests as the user's they signed in as; return how many."""
        return self.filter(user=None, visitor=visitor).update(user=user, visitor="")


class UsageRecord(models.Model):
    class Status(models.TextChoices):
        COMPLETED = "completed"
        STOPPED = "stopped"
        DISCONNECTED = "disconnected"
        FAILED = "failed"

    class Channel(models.TextChoices):
        CHAT = "chat"
        API = "api"
        BATCH = "batch"
        BENCH = "bench"

    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    visitor = models.CharField(
        max_length=32, blank=True, help_text="anonymous requests: keyed hash of the session key (never the key)"
    )
    conversation = models.ForeignKey(
        "chat.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    message = models.ForeignKey(
        "chat.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    api_key = models.ForeignKey(
        "gateway.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    model = models.CharField(max_length=200, help_text="the model id the operator configured")
    upstream_model = models.CharField(max_length=200, blank=True, help_text="the model id the upstream reported")
    streamed = models.BooleanField(default=True)
    channel = models.CharField(
        max_length=16, choices=Channel.choices, default=Channel.CHAT, db_index=True,
        help_text="where the request came from: the chat page, the API, a batch or a benchmark",
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    finish_reason = models.CharField(max_length=40, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0, help_text="prompt tokens read from the cache")
    cache_write_tokens = models.PositiveIntegerField(default=0, help_text="prompt tokens written to the cache")
    estimated = models.BooleanField(default=False, help_text="the upstream reported no usage: tokens are estimated")
    price = models.ForeignKey(ModelPrice, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)
    upstream_cost_usd = models.DecimalField(
        max_digits=20, decimal_places=10, null=True, blank=True,
        help_text="the cost the upstream reported (LiteLLM's, OpenRouter's usage.cost), kept beside ours",
    )
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    retries = models.PositiveSmallIntegerField(default=0)
    history_dropped = models.PositiveIntegerField(default=0, help_text="oldest messages not sent upstream")
    error = models.TextField(blank=True)
    started = models.DateTimeField(db_index=True)
    finished = models.DateTimeField()

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-started"]
        indexes = [
            models.Index(fields=["model", "started"]),
            models.Index(fields=["status", "started"]),
            models.Index(fields=["user", "started"]),
            # Covering indexes for usage_report and the admin totals: each grouping reads one index in order,
            # with no sort and no table rows (see docs/REPORTS.md for the measurements).
            models.Index(fields=[*REPORT_PREFIX["model"], *REPORT_COLUMNS], name="usage_report_by_model"),
            models.Index(fields=[*REPORT_PREFIX["status"], *REPORT_COLUMNS], name="usage_report_by_status"),
            models.Index(fields=[*REPORT_PREFIX["user"], *REPORT_COLUMNS], name="usage_report_by_user"),
            models.Index(fields=["started", "ttft_ms", "prompt_tokens", "completion_tokens", "cost_usd"],
                         name="usage_report_by_day"),
            # The dashboard's median reply length reads one histogram bucket of one model's completed replies.
            models.Index(fields=["model", "completion_tokens", "started"], condition=models.Q(status="completed"),
                         name="usage_completed_length"),
        ]

    def __str__(self):
        return f"{self.model} {self.status} {self.started:%Y-%m-%d %H:%M}"

    @classmethod
    def record(cls, abandonment=None, **fields):
        """Price and save one request's record, with its abandonment event, in one transaction."""
        record = cls(**fields)
        record.price = ModelPrice.objects.in_force(record.model, record.started)
        if record.price is not None:
            record.cost_usd = record.price.cost(
                record.prompt_tokens, record.completion_tokens, record.cached_tokens, record.cache_write_tokens
            )
        with transaction.atomic(savepoint=False):  # inside the caller's transaction, if any
            rows.insert([record])  # as record.save(), its statement written once (chatsite/rows.py)
            if abandonment is not None:
                AbandonmentEvent.objects.create(record=record, **abandonment)
        return record


class AbandonmentEvent(models.Model):
    class Reason(models.TextChoices):
        STOP = "stop"
        DISCONNECT = "disconnect"

    class Phase(models.TextChoices):
        BEFORE_FIRST_TOKEN = "before_first_token"
        STREAMING = "streaming"

    record = models.OneToOneField(UsageRecord, on_delete=models.CASCADE, related_name="abandonment")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    phase = models.CharField(max_length=24, choices=Phase.choices)
    tokens_delivered = models.PositiveIntegerField(default=0)
    elapsed_ms = models.PositiveIntegerField(help_text="milliseconds from the request's start to the person leaving")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.reason} {self.phase} after {self.elapsed_ms} ms"


class Refusal(models.Model):
    """A request refused before it reached the upstream: what the reports count as refusals per day.

    A burst of rate-limited messages leaves one row per scope and minute (the first refusal), so
    flooding the socket cannot flood this table.
    """

    class Kind(models.TextChoices):
        RATE_LIMITED = "rate_limited"
        BUDGET_EXCEEDED = "budget_exceeded"
        BUSY = "busy"  # a per-person or per-address cap on replies in flight or open sockets

    created = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    scope = models.CharField(max_length=16, help_text="whose limit: person, address, site, apikey, …")
    who_hash = models.CharField(max_length=32, blank=True, help_text="keyed hash of who (never the raw key)")
    model = models.CharField(max_length=200, blank=True)
    channel = models.CharField(max_length=16, default="ws", help_text="ws (the chat socket) or api")

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["created", "kind"])]

    def __str__(self):
        return f"{self.kind} ({self.scope}) {self.created:%Y-%m-%d %H:%M}"


class UserLimits(models.Model):
    """One user's own limits, overriding the CHAT_ settings; an empty field keeps the setting."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_limits")
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="messages a minute (0: no limit); empty: CHAT_RATE_LIMIT")
    daily_budget_usd = models.DecimalField(
        "daily budget (USD)", max_digits=14, decimal_places=6, null=True, blank=True,
        help_text="USD a UTC day; empty: CHAT_DAILY_BUDGET_USD")
    max_inflight = models.PositiveSmallIntegerField(
        "replies in flight", null=True, blank=True,
        help_text="replies generating at once (0: no limit); empty: CHAT_MAX_INFLIGHT_PER_PERSON")

    class Meta:
        verbose_name = verbose_name_plural = "user limits"

    def __str__(self):
        return f"limits of {self.user}"


class RollupSpan(models.Model):
    """A closed span of time (a calendar day in one time zone, or an hour of a day not yet closed) whose usage
    records are summed in the roll-up tables below.

    The dashboard reads these sums instead of the records (billing/rollup.py). Database triggers (migration
    0009) mark a span stale whenever a record or abandonment event of [starts, ends) is inserted, changed or
    deleted, whatever wrote it: a stale span is summed again before it is read.
    """

    time_zone = models.CharField(max_length=64)
    day = models.DateField(help_text="the calendar day (in time_zone) the span is or is part of")
    starts = models.DateTimeField()
    ends = models.DateTimeField()
    stale = models.BooleanField(default=False)
    computed = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["time_zone", "starts", "ends"], name="one_rollup_per_span")]
        indexes = [models.Index(fields=["starts", "ends"], name="rollup_span")]

    def __str__(self):
        return f"{self.starts:%Y-%m-%d %H:%M}-{self.ends:%Y-%m-%d %H:%M} ({self.time_zone}){' stale' if self.stale else ''}"


class RollupCell(models.Model):
    """A span's records of one model, status, time-to-first-token bin and wait bucket: their sums and events."""

    span = models.ForeignKey(RollupSpan, on_delete=models.CASCADE, related_name="cells")
    model = models.CharField(max_length=200)
    status = models.CharField(max_length=16)
    ttft_bin = models.SmallIntegerField(null=True)
    wait_bucket = models.SmallIntegerField()
    requests = models.IntegerField()
    prompt_tokens = models.BigIntegerField()
    completion_tokens = models.BigIntegerField()
    cost_units = models.BigIntegerField(help_text="summed cost_usd in 1e-10 dollars (exact on every database)")
    before_first_token = models.IntegerField(default=0)
    streaming = models.IntegerField(default=0)
    stop = models.IntegerField(default=0)
    disconnect = models.IntegerField(default=0)
    reconciled = models.IntegerField(default=0, help_text="records with both our cost and the upstream's")
    reconciled_units = models.BigIntegerField(default=0)
    upstream_units = models.BigIntegerField(default=0)


class RollupPerson(models.Model):
    """A span's records of one person (a user id, or an anonymous visitor) and one model, or every model (null)."""

    span = models.ForeignKey(RollupSpan, on_delete=models.CASCADE, related_name="people")
    model = models.CharField(max_length=200, null=True, help_text="null: the person's records of every model")
    user_id = models.IntegerField(null=True)  # no foreign key: a deleted user's records are updated, and re-summed
    visitor = models.CharField(max_length=32, blank=True)
    requests = models.IntegerField()
    cost_units = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["span", "model"], name="rollup_person_span_model")]


class RollupHistogram(models.Model):
    """How many of a span's records of one model fall in one bucket of a measure (see rollup.HISTOGRAM_WIDTHS)."""

    span = models.ForeignKey(RollupSpan, on_delete=models.CASCADE, related_name="histograms")
    model = models.CharField(max_length=200)
    measure = models.CharField(max_length=8, help_text="ttft: ttft_ms; reply: completion_tokens of completed")
    low = models.IntegerField(help_text="the bucket's first value")
    n = models.IntegerField()


class RollupCut(models.Model):
    """How many of a span's stopped or disconnected replies of one model and price generated this many tokens."""

    span = models.ForeignKey(RollupSpan, on_delete=models.CASCADE, related_name="cuts")
    model = models.CharField(max_length=200)
    price_id = models.IntegerField(null=True)  # no foreign key: prices are never deleted (records PROTECT them)
    completion_tokens = models.IntegerField()
    n = models.IntegerField()


from billing.budgets import BudgetHold, BudgetLedger  # noqa: E402,F401 - models of this app
