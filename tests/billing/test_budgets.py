"""The reserve-then-settle mechanism behind every daily budget (billing/budgets.py)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from billing import budgets
from billing.budgets import BudgetExceeded, BudgetHold, BudgetLedger, Scope

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


def person(limit="0.10", key="alice"):
    return Scope("person", key, D(limit))


def test_it_holds_the_worst_case_until_it_is_settled():
    first = budgets.reserve([person()], D("0.06"))
    assert budgets.committed(person()) == (0, D("0.06"))
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve([person()], D("0.05"))  # 0.06 held + 0.05 > 0.10
    assert refused.value.scope.kind == "person" and "$0.10" in str(refused.value)
    budgets.settle(first, D("0.01"))  # the reply cost less than its worst case
    assert budgets.committed(person()) == (D("0.01"), 0)
    budgets.reserve([person()], D("0.09"))  # 0.01 spent + 0.09 fits exactly


def test_it_names_the_budget_that_is_full():
    scopes = [person("1.00"), Scope("address", "10.0.0.1", D("1.00")), Scope("site", "", D("0.05"))]
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve(scopes, D("0.06"))
    assert refused.value.scope.kind == "site" and "site" in str(refused.value)
    assert not BudgetHold.objects.exists()  # nothing held by a refused reservation


def test_it_ignores_scopes_without_a_limit_and_touches_no_table_when_none_has_one():
    reservation = budgets.reserve([Scope("person", "alice", None)], D("5"))
    assert reservation.scopes == () and not BudgetLedger.objects.exists()
    budgets.settle(reservation, D("5"))
    assert not BudgetLedger.objects.exists()


def test_it_releases_a_reservation_that_never_reached_the_upstream():
    reservation = budgets.reserve([person()], D("0.10"))
    budgets.release(reservation)
    assert budgets.committed(person()) == (0, 0)
    budgets.settle(reservation, D("0.10"))  # a second settle does nothing
    assert budgets.committed(person()) == (0, 0)


def test_it_counts_the_whole_reservation_when_the_cost_is_unknown():
    budgets.settle(budgets.reserve([person()], D("0.04")), None)
    assert budgets.committed(person()) == (D("0.04"), 0)


def test_it_lets_a_killed_process_hold_nothing_after_the_holds_expire(settings):
    settings.CHAT_BUDGET_HOLD_SECONDS = 60
    budgets.reserve([person()], D("0.10"))  # never settled: its process died
    with pytest.raises(BudgetExceeded):
        budgets.reserve([person()], D("0.01"))
    later = timezone.now() + timedelta(seconds=61)
    budgets.reserve([person()], D("0.10"), now=later)
    assert BudgetHold.objects.count() == 1  # the expired hold was cleared on the way


def test_it_keeps_people_and_days_apart():
    budgets.settle(budgets.reserve([person()], D("0.10")), D("0.10"))
    budgets.reserve([person(key="bob")], D("0.10"))
    tomorrow = timezone.now() + timedelta(days=1)
    budgets.reserve([person()], D("0.10"), now=tomorrow)


def test_it_rolls_the_hold_back_with_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        budgets.reserve([person()], D("0.10"))
        raise RuntimeError("the message could not be stored")
    assert budgets.committed(person()) == (0, 0)


def test_it_stores_only_a_keyed_hash_of_who():
    budgets.reserve([Scope("person", "session:abcdef0123456789", D("1"))], D("0.5"))
    keys = set(BudgetLedger.objects.values_list("key", flat=True)) | set(BudgetHold.objects.values_list("key", flat=True))
    assert keys == {budgets.who_hash("session:abcdef0123456789")}
    assert "abcdef" not in next(iter(keys))


def test_it_never_lets_parallel_reservations_pass_the_limit():
    """30 threads (each its own database connection) reserve at once; exactly the ten that fit get through."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("the in-memory test database's shared-cache locks do not wait; the live-server tests cover SQLite")

    def attempt(_):
        try:
            budgets.reserve([person("0.010")], D("0.001"))
            return True
        except BudgetExceeded:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(attempt, range(30)))
    assert outcomes.count(True) == 10
    assert budgets.committed(person("0.010")) == (0, D("0.010"))


def test_it_clears_a_killed_process_s_expired_holds_of_an_earlier_day_too(settings):
    settings.CHAT_BUDGET_HOLD_SECONDS = 60
    yesterday = timezone.now() - timedelta(days=1)
    budgets.reserve([person()], D("0.10"), now=yesterday)  # never settled
    budgets.reserve([person(key="bob")], D("0.10"), now=yesterday)  # someone else's: left alone
    today = budgets.reserve([person()], D("0.10"))  # today's budget is whole: yesterday's hold counts for nothing
    assert list(BudgetHold.objects.filter(key=budgets.who_hash("alice")).values_list("token", flat=True)) == [
        today.token]
    assert BudgetHold.objects.filter(key=budgets.who_hash("bob")).count() == 1


def test_it_counts_only_live_holds_of_the_day_whatever_else_the_scope_holds(settings):
    settings.CHAT_BUDGET_HOLD_SECONDS = 60
    budgets.reserve([person()], D("0.03"), now=timezone.now() + timedelta(days=1))  # tomorrow's
    budgets.reserve([person()], D("0.04"))
    budgets.reserve([person(key="bob")], D("0.10"))
    budgets.settle(budgets.reserve([Scope("site", "", D("1"))], D("0.5")), D("0.5"))
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve([person(), Scope("site", "", D("1"))], D("0.07"))  # 0.04 held + 0.07 > 0.10
    assert (refused.value.scope.kind, refused.value.committed) == ("person", D("0.04"))
    budgets.reserve([person(), Scope("site", "", D("1"))], D("0.06"))  # fits exactly
    assert budgets.committed(Scope("site", "", D("1"))) == (D("0.5"), D("0.06"))


def test_a_refusal_inside_the_callers_transaction_holds_nothing_and_leaves_it_usable():
    budgets.reserve([person()], D("0.08"))
    with transaction.atomic():
        with pytest.raises(BudgetExceeded):
            budgets.reserve([person(), Scope("site", "", D("5"))], D("0.05"))
        assert BudgetHold.objects.count() == 1  # the caller goes on in its transaction
    assert budgets.committed(Scope("site", "", D("5"))) == (0, 0)


def test_it_rolls_the_settle_back_with_the_callers_transaction():
    reservation = budgets.reserve([person()], D("0.06"))
    with pytest.raises(RuntimeError), transaction.atomic():
        budgets.settle(reservation, D("0.01"))
        raise RuntimeError("the usage record could not be stored")
    assert budgets.committed(person()) == (0, D("0.06"))  # neither spent nor released: still held


def test_it_opens_no_savepoint_inside_the_callers_transaction():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        budgets.settle(budgets.reserve([person(), Scope("site", "", D("5"))], D("0.05")), D("0.01"))
    assert not [q["sql"] for q in captured.captured_queries if "SAVEPOINT" in q["sql"].upper()]
    assert budgets.committed(person()) == (D("0.01"), 0)
    assert budgets.committed(Scope("site", "", D("5"))) == (D("0.01"), 0)
