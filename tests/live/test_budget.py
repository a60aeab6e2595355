"""The guards against the running server: 30 parallel sends against a $0.01 site budget spend at
most $0.01, and cookie-dropping visitors from one address stop at the address's rate limit.

One process on SQLite, and two processes sharing PostgreSQL and Redis (marked `services`: skipped
when they are down, failed under CI=true). The mock's request count proves every refusal happened
before any upstream request.
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.live.client import Chat, new_session
from tests.live.servers import (
    ROOT, Deployment, Server, Store, live_postgres, live_redis, migrate, server_env, services_or_skip,
)

MODEL = "mock/budget+ttft=30+gap=5+tokens=200"  # ~$0.003 a reply at $3 / $15 per Mtok: 30 would cost $0.09
BUDGET = Decimal("0.01")
SETTINGS = {"CHAT_SITE_DAILY_BUDGET_USD": BUDGET, "CHAT_MAX_TOKENS": 200, "CHAT_IP_RATE_LIMIT": 0,
            "CHAT_MAX_INFLIGHT_PER_ADDRESS": 0, "CHAT_MAX_SOCKETS_PER_ADDRESS": 0}
PRICE = ("from billing.models import ModelPrice; "
         f"ModelPrice.objects.create(model={MODEL!r}, input_per_mtok=3, output_per_mtok=15)")


def deploy(env, workdir, count, database_url):
    migrate(env)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", PRICE], cwd=ROOT, env=env, check=True, timeout=120)
    return Deployment([Server(env, workdir / f"daphne-{n}.log").start() for n in range(count)], Store(database_url))


@pytest.fixture(scope="module")
def one_budget_process(upstream, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live-budget-one")
    database_url = f"sqlite:///{workdir / 'chatsite.sqlite3'}"
    deployment = deploy(server_env(database_url, "", [MODEL], upstream.base_url + "/v1", **SETTINGS),
                        workdir, 1, database_url)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def two_budget_processes(upstream, tmp_path_factory):
    import psycopg

    admin_url, database_url, name = live_postgres()
    database_url, name = database_url.replace(f"/{name}", f"/{name}_budget"), f"{name}_budget"
    redis_url = live_redis()
    services_or_skip(admin_url, redis_url)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    workdir = tmp_path_factory.mktemp("live-budget-two")
    env = server_env(database_url, redis_url, [MODEL], upstream.base_url + "/v1", DB_POOL_SIZE=4, **SETTINGS)
    deployment = deploy(env, workdir, 2, database_url)
    yield deployment
    deployment.stop()
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["one_budget_process", pytest.param("two_budget_processes", marks=pytest.mark.services)])
def budget_deployment(request):
    return request.getfixturevalue(request.param)


def first_and_done(chat):
    """Send one message; return (its first frame, its `done` or None when it was refused)."""
    chat.send(type="send", content="tell me a long story", model=MODEL)
    first = chat.receive(30)
    if first is None or first["type"] != "start":
        return first, None
    return first, chat.until("done", timeout=60)[-1]


def test_it_spends_at_most_the_budget_however_many_send_at_once(budget_deployment, upstream):
    servers = budget_deployment.servers
    chats = [Chat(servers[n % len(servers)], new_session(servers[n % len(servers)])) for n in range(30)]
    before = upstream.stats(log=False)["requests"]
    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(first_and_done, chats))
    for chat in chats:
        chat.ws.close()
    started = [done for first, done in outcomes if first and first["type"] == "start"]
    refused = [first for first, done in outcomes if first and first["type"] == "error"]
    assert started and len(started) + len(refused) == 30, outcomes
    assert {f["code"] for f in refused} == {"budget_exceeded"} and "site's daily budget" in refused[0]["message"]
    ((spent, records),) = budget_deployment.store.query("SELECT SUM(cost_usd), COUNT(*) FROM billing_usagerecord")
    assert Decimal(str(spent)) <= BUDGET, f"spent ${spent} of a ${BUDGET} budget"
    assert records == len(started) == upstream.stats(log=False)["requests"] - before
    ((counted,),) = budget_deployment.store.query(
        "SELECT COUNT(*) FROM billing_refusal WHERE kind = 'budget_exceeded' AND scope = 'site'")
    assert counted == len(refused)


@pytest.fixture(scope="module")
def rate_limited_process(upstream, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live-rate")
    database_url = f"sqlite:///{workdir / 'chatsite.sqlite3'}"
    env = server_env(database_url, "", [MODEL], upstream.base_url + "/v1", CHAT_IP_RATE_LIMIT=3)
    migrate(env)
    deployment = Deployment([Server(env, workdir / "daphne.log").start()], Store(database_url))
    yield deployment
    deployment.stop()


def test_it_stops_cookie_dropping_visitors_at_the_address_rate_limit(rate_limited_process, upstream):
    server = rate_limited_process.servers[0]
    before = upstream.stats(log=False)["requests"]
    firsts = []
    for _ in range(6):  # a new session (the cookie dropped) for every message, all from 127.0.0.1
        chat = Chat(server, new_session(server))
        first, _ = first_and_done(chat)
        firsts.append(first)
        chat.ws.close()
    assert [f["type"] for f in firsts] == ["start"] * 3 + ["error"] * 3, firsts
    assert {f["code"] for f in firsts[3:]} == {"rate_limited"} and "network address" in firsts[3]["message"]
    assert upstream.stats(log=False)["requests"] - before == 3
