"""Staff pages for prices, usage records (with totals and CSV export) and abandonment events."""

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, Max, Min, QuerySet
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing import exports, reports
from billing.models import AbandonmentEvent, ModelPrice, UsageRecord
from billing.pagination import EstimatedCountPaginator


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records are written by the chat relay only: staff may look, never add, change or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ProbedDatesQuerySet(QuerySet):
    """A queryset whose datetimes() probes each period through the index instead of truncating every row."""

    def aggregate(self, *args, **kwargs):
        """Answer a bare Min/Max pair (the date hierarchy's) with two index seeks instead of one full scan."""
        if args or not kwargs or not all(is_bare_extreme(e) for e in kwargs.values()):
            return super().aggregate(*args, **kwargs)
        found = {}
        for alias, expression in kwargs.items():
            field = expression.source_expressions[0].name
            ordered = self.order_by(field if isinstance(expression, Min) else f"-{field}")
            found[alias] = ordered.exclude(**{field: None}).values_list(field, flat=True).first()
        return found

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        """Return the periods (year, month or day) that hold at least one record, oldest first."""
        if kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        found, start = [], truncate(timezone.localtime(bounds["first"]), kind)
        last = timezone.localtime(bounds["last"])
        while start <= last:
            end = following(start, kind)
            if self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}).exists():
                found.append(start)
            start = end
        return found if order == "ASC" else found[::-1]


def is_bare_extreme(expression):
    """Return True for Min(field) or Max(field) of a plain field, with no filter."""
    return (
        isinstance(expression, (Min, Max)) and expression.filter is None
        and len(expression.source_expressions) == 1 and isinstance(expression.source_expressions[0], F)
    )


def truncate(moment, kind):
    """Return the start of the year, month or day holding `moment`."""
    fields = {"year": dict(month=1, day=1), "month": dict(day=1), "day": {}}[kind]
    return moment.replace(hour=0, minute=0, second=0, microsecond=0, **fields)


def following(start, kind):
    """Return the start of the period after the one starting at `start`."""
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + timedelta(days=1)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = (
        "model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "effective_from",
        "in_force",
    )
    list_filter = ("model",)
    search_fields = ("model",)
    date_hierarchy = "effective_from"
    ordering = ("model", "-effective_from")

    @admin.display(boolean=True, description="in force now")
    def in_force(self, price):
        current = ModelPrice.objects.in_force(price.model)
        return current is not None and current.pk == price.pk


class AbandonmentInline(admin.StackedInline):
    model = AbandonmentEvent
    fields = ("reason", "phase", "tokens_delivered", "elapsed_ms", "created")
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "started", "model", "status", "streamed", "tokens", "cost", "ttft_ms", "duration_ms", "retries", "who",
    )
    list_filter = ("model", "status", "streamed", "estimated", "started")
    date_hierarchy = "started"
    # Exact matches where a prefix or substring search could not use an index; error text is a substring search.
    search_fields = ("=request_id", "^model", "=session_key", "=user__username", "error")
    list_select_related = ("user",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    inlines = [AbandonmentInline]
    actions = ["export_selected"]

    def get_queryset(self, request):
        records = ProbedDatesQuerySet(self.model, using=UsageRecord.objects.db)
        return records.order_by(*(self.get_ordering(request) or UsageRecord._meta.ordering))

    def get_urls(self):
        export = path("export.csv", self.admin_site.admin_view(self.export_view), name="billing_usagerecord_export")
        return [export, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data.update(self.summary(changelist.queryset))
            query = request.GET.urlencode()
            response.context_data["export_url"] = reverse("admin:billing_usagerecord_export") + (f"?{query}" if query else "")
        return response

    def summary(self, records):
        """Return the totals and the per-model rows of the filtered records, one query each."""
        records = records.order_by()
        figures = reports.sums()
        total = reports.row("Total", records.aggregate(**figures))
        per_model = [reports.row(g["model"], g) for g in records.values("model").annotate(**figures).order_by("model")]
        return {"totals": total, "per_model": per_model}

    def export_view(self, request):
        """Stream every record the changelist's current filters select, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied  # admin_view refuses non-staff; this refuses staff without the permission
        changelist = self.get_changelist_instance(request)
        return exports.csv_response(request, changelist.queryset, "usage-records.csv")

    @admin.action(description="Export selected usage records as CSV", permissions=["view"])
    def export_selected(self, request, queryset):
        return exports.csv_response(request, queryset, "usage-records-selected.csv")

    @admin.display(description="tokens")
    def tokens(self, record):
        mark = "~" if record.estimated else ""
        return f"{mark}{record.prompt_tokens} / {record.completion_tokens}"

    @admin.display(description="cost USD", ordering="cost_usd")
    def cost(self, record):
        return "unpriced" if record.cost_usd is None else f"{record.cost_usd:.10f}"

    @admin.display(description="who")
    def who(self, record):
        if record.user_id is not None:
            return record.user.get_username()
        return f"session:{record.session_key[:8]}" if record.session_key else "-"


@admin.register(AbandonmentEvent)
class AbandonmentEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "reason", "phase", "tokens_delivered", "elapsed_ms", "record_link")
    list_filter = ("reason", "phase")
    list_select_related = ("record",)
    ordering = ("-id",)  # newest first along the primary key: no sort of the whole table
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    @admin.display(description="usage record")
    def record_link(self, event):
        url = reverse("admin:billing_usagerecord_change", args=[event.record_id])
        return format_html('<a href="{}">{}</a>', url, event.record)
