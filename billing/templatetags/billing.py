"""Template filters for billing pages: costs at a readable precision, rates as percentages."""

from decimal import Decimal, InvalidOperation

from django import template

register = template.Library()


def display_cost(value):
    """Return a cost for a list: cents from a dollar up, three significant digits below; exact in detail and CSV."""
    if value is None:
        return "unpriced"
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    places = max(2, 2 - value.adjusted())  # 0.0123456 -> 0.0123, 0.5 -> 0.500
    return f"{value:.{places}f}"


@register.filter
def cost(value):
    """Show a cost (a Decimal or its exact string) at a readable precision."""
    try:
        return display_cost(None if value is None else Decimal(value))
    except InvalidOperation:
        return value


@register.filter
def percent(value):
    """Show a rate between 0 and 1 as a percentage with one decimal."""
    return "-" if value is None else f"{value:.1%}"
