"""Report periods as whole calendar days in the operator's time zone: --since, --until, --days and --tz."""

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils import timezone

LAST_DAYS = re.compile(r"(\d+)d")


def zone(name):
    """Return the time zone called `name` (an IANA name like Europe/Paris), or raise ValueError naming --tz."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--tz must be a time zone name like Europe/Paris or UTC; got {name!r}.") from None


def midnight(day, tz):
    """Return the first instant of `day` in `tz`."""
    return datetime.combine(day, time.min, tzinfo=tz)


def parse_day(value, flag, today):
    """Return the date `value` names: today, yesterday or YYYY-MM-DD; raise ValueError naming the flag."""
    if value == "today":
        return today
    if value == "yesterday":
        return today - timedelta(days=1)
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be today, yesterday or a date like 2025-06-30; got {value!r}.") from None


def first_day(value, today):
    """Return the first day --since names: today, yesterday, Nd (today and the N-1 days before) or a date."""
    found = LAST_DAYS.fullmatch(value or "")
    if found is None:
        try:
            return parse_day(value, "--since", today)
        except ValueError:
            raise ValueError(
                f"--since must be today, yesterday, Nd (the last N days, today included) or a date like "
                f"2025-06-30; got {value!r}."
            ) from None
    return last_days(int(found.group(1)), today, "--since Nd")


def last_days(days, today, flag="--days"):
    """Return the first of the last `days` calendar days, today included."""
    if days < 1:
        raise ValueError(f"{flag} must be at least 1; got {days}.")
    return today - timedelta(days=days - 1)


def period(since=None, until=None, days=None, now=None, tz=None):
    """Return the [start, end) of whole calendar days in `tz` (the current time zone); None is open-ended.

    --since and --until are inclusive days; --days N is today and the N-1 days before.
    """
    if days is not None and (since or until):
        raise ValueError("Use either --days or --since/--until, not both.")
    tz = tz or timezone.get_current_timezone()
    today = timezone.localtime(now or timezone.now(), tz).date()
    first = last = None
    if days is not None:
        first, last = last_days(days, today), today
    if since:
        first = first_day(since, today)
    if until:
        last = parse_day(until, "--until", today)
    if first and last and first > last:
        raise ValueError(f"--since {since} is after --until {until}.")
    start = midnight(first, tz) if first else None
    end = midnight(last + timedelta(days=1), tz) if last else None
    return start, end


def days_between(start, end, tz):
    """Return every calendar day in [start, end), in `tz`, oldest first."""
    day, days = timezone.localtime(start, tz).date(), []
    while midnight(day, tz) < end:
        days.append(day)
        day += timedelta(days=1)
    return days


