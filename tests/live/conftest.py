"""The live suite's world: the mock upstream in a thread, and chatsite in real daphne processes.

    one_process    one daphne on SQLite and the in-memory layer (the embedded defaults)
    two_processes  two daphnes on PostgreSQL and Redis (production); skipped when those are down,
                   failed under CI=true
"""

import pytest

from chat.mock_upstream import MockUpstream
from tests.live.servers import Deployment, Server, Store, migrate, production, server_env

# Four tokens, each its own frame (CHAT_FLUSH_MS=0), far enough apart to stop between any two.
SHORT = "mock/short+ttft=60+gap=120+tokens=4"
FAST = "mock/fast+ttft=5+gap=1+tokens=4"
SLOW = "mock/slow+ttft=50+gap=40+tokens=60"
MODELS = [SHORT, FAST, SLOW]
SETTINGS = {"CHAT_FLUSH_MS": 0, "CHAT_RESUME_GRACE_S": 1.5, "CHAT_SHUTDOWN_TIMEOUT": 5}


@pytest.fixture(scope="package")
def upstream():
    mock = MockUpstream(ttft_ms=20, gap_ms=10, tokens=8)
    mock.start_in_thread()
    yield mock
    mock.stop()


@pytest.fixture(scope="package")
def one_process(upstream, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live-one")
    database_url = f"sqlite:///{workdir / 'chatsite.sqlite3'}"
    env = server_env(database_url, "", MODELS, upstream.base_url + "/v1", **SETTINGS)
    migrate(env)
    deployment = Deployment([Server(env, workdir / "daphne.log").start()], Store(database_url))
    yield deployment
    deployment.stop()


@pytest.fixture(scope="package")
def two_processes(upstream, tmp_path_factory):
    with production(upstream, tmp_path_factory.mktemp("live-two"), models=MODELS, DB_POOL_SIZE=4,
                    **SETTINGS) as deployment:
        yield deployment


@pytest.fixture(params=["one_process", pytest.param("two_processes", marks=pytest.mark.services)])
def deployment(request):
    return request.getfixturevalue(request.param)
