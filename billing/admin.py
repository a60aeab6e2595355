"""Staff pages for prices, usage records (with totals and CSV export) and abandonment events."""

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing import exports, reports
from billing.models import AbandonmentEvent, ModelPrice, Refusal, UsageRecord, UserLimits
from billing.pagination import EstimatedCountPaginator
from billing.templatetags.billing import display_cost


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records are written by the chat relay only: staff may look, never add, change or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CalendarDateFilter(admin.DateFieldListFilter):
    """Django's date filter (today, past 7 days, this month, this year) with yesterday added.

    Every choice is a range on the indexed field: no query to draw the choices, unlike a date hierarchy.
    """

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        yesterday = {self.lookup_kwarg_since: today - timedelta(days=1), self.lookup_kwarg_until: today}
        self.links = (*self.links[:2], ("Yesterday", yesterday), *self.links[2:])


class AbandonedFilter(admin.SimpleListFilter):
    """Records by how the person left: before the first token, while streaming, or not at all."""

    title = "abandoned"
    parameter_name = "abandoned"

    def lookups(self, request, model_admin):
        return [*AbandonmentEvent.Phase.choices, ("no", "not abandoned")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(abandonment__isnull=True)
        if self.value() in AbandonmentEvent.Phase.values:
            return queryset.filter(abandonment__phase=self.value())
        return queryset


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = (
        "model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "effective_from",
        "in_force",
    )
    list_filter = (("effective_from", CalendarDateFilter),)  # a filter by model would list every imported model
    search_fields = ("model",)
    ordering = ("model", "-effective_from")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(current=ModelPrice.objects.current_pk(OuterRef("model")))

    @admin.display(boolean=True, description="in force now")
    def in_force(self, price):
        return price.current == price.pk


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
        "started", "model", "channel", "status", "streamed", "tokens", "cost", "ttft_ms", "duration_ms", "retries",
        "who",
    )
    list_filter = (
        ("started", CalendarDateFilter), "model", "status", "channel", "api_key", AbandonedFilter, "streamed", "estimated",
    )
    # Exact matches where a prefix or substring search could not use an index; error text is a substring search.
    search_fields = ("=request_id", "^model", "=visitor", "=user__username", "error")
    list_select_related = ("user", "api_key")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    inlines = [AbandonmentInline]
    actions = ["export_selected"]

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
        figures = {**reports.sums(), **reports.record_abandonment_counts()}
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
        return display_cost(record.cost_usd)

    @admin.display(description="who")
    def who(self, record):
        if record.api_key_id is not None:
            return f"key:{record.api_key.name}"
        if record.user_id is not None:
            return record.user.get_username()
        return f"visitor:{record.visitor[:8]}" if record.visitor else "-"


@admin.register(AbandonmentEvent)
class AbandonmentEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "reason", "phase", "tokens_delivered", "elapsed_ms", "record_link")
    list_filter = (("created", CalendarDateFilter), "reason", "phase")
    list_select_related = ("record",)
    ordering = ("-id",)  # newest first along the primary key: no sort of the whole table
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    @admin.display(description="usage record")
    def record_link(self, event):
        url = reverse("admin:billing_usagerecord_change", args=[event.record_id])
        return format_html('<a href="{}">{}</a>', url, event.record)


@admin.register(Refusal)
class RefusalAdmin(ReadOnlyAdmin):
    list_display = ("created", "kind", "scope", "model", "channel", "who_hash")
    list_filter = ("kind", "scope", "channel")
    date_hierarchy = "created"
    ordering = ("-id",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = ("user", "rate_limit", "daily_budget_usd", "max_inflight")
    search_fields = ("user__username", "user__email")
    autocomplete_fields = ("user",)
