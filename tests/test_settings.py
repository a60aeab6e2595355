"""Settings from the environment: embedded defaults, the scale-out setup, and strict errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRINT = (
    "import json, chatsite.settings as s; print(json.dumps({'layer': s.CHANNEL_LAYERS['default']['BACKEND'],"
    " 'cache': s.CACHES['default']['BACKEND'], 'db': s.DATABASES['default']['ENGINE'],"
    " 'models': s.CHAT_MODELS, 'providers': s.CHAT_PROVIDERS}))"
)


def load(**env):
    """Return the settings chatsite computes from this environment (in a fresh interpreter)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CHAT_MODELS")}
    clean.update({"SECRET_KEY": "x"}, **env)
    result = subprocess.run(
        [sys.executable, "-c", PRINT], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    return result


def test_it_defaults_to_sqlite_the_in_memory_layer_and_the_demo_model():
    settings = json.loads(load().stdout)
    assert settings["layer"] == "channels.layers.InMemoryChannelLayer"
    assert settings["cache"].endswith("LocMemCache")
    assert settings["db"] == "django.db.backends.sqlite3"
    assert settings["models"] == ["demo/assistant"]


def test_it_uses_redis_and_postgresql_when_told():
    settings = json.loads(
        load(REDIS_URL="redis://127.0.0.1:6379/3", DATABASE_URL="postgres://postgres@127.0.0.1:5432/x").stdout
    )
    assert settings["layer"] == "channels_redis.core.RedisChannelLayer"
    assert settings["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert settings["db"] == "django.db.backends.postgresql"


def test_it_configures_each_provider_prefix_from_the_environment():
    settings = json.loads(
        load(
            CHAT_MODELS="openai/gpt-4.1-mini,anthropic/claude-sonnet-4-5,ollama/llama3:8b",
            OLLAMA_BASE_URL="http://127.0.0.1:11434/v1/",
            ANTHROPIC_API_KEY="sk-ant-test",
        ).stdout
    )
    providers = settings["providers"]
    assert providers["openai"] == {"api": "openai", "base_url": "https://api.openai.com/v1", "api_key": ""}
    assert providers["anthropic"]["api"] == "anthropic" and providers["anthropic"]["api_key"] == "sk-ant-test"
    assert providers["ollama"] == {"api": "openai", "base_url": "http://127.0.0.1:11434/v1", "api_key": ""}


def test_it_refuses_a_model_without_provider_prefix():
    result = load(CHAT_MODELS="gpt-4.1-mini")
    assert result.returncode != 0 and "CHAT_MODELS" in result.stderr


def test_it_refuses_an_unknown_wire_protocol():
    result = load(CHAT_MODELS="x/y", X_API="grpc")
    assert result.returncode != 0 and "X_API" in result.stderr


def test_it_needs_a_secret_key_unless_debugging():
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    result = subprocess.run([sys.executable, "-c", "import chatsite.settings"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    env["DEBUG"] = "1"
    result = subprocess.run([sys.executable, "-c", "import chatsite.settings"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "insecure development key" in result.stderr


def run(args, **env):
    """Run a command in a fresh interpreter with this environment on top of a clean one."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("REDIS_URL", "DATABASE_URL", "CHAT_MODELS", "SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE")}
    clean.update(env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("DEBUG", "ture", "use 1/0, true/false"),
        ("CHAT_FLUSH_MS", "30ms", "expected a whole number"),
        ("CHAT_MAX_CONCURRENT", "0", "too small: the least is 1"),
        ("CHAT_FIRST_TOKEN_TIMEOUT", "0", "too small"),
        ("CHAT_STALL_TIMEOUT", "nan", "finite"),
        ("CHAT_DAILY_BUDGET_USD", "five", "decimal number"),
        ("CHAT_DAILY_BUDGET_USD", "-1", "too small"),
        ("DATABASE_URL", "db.sqlite3", "database URL"),
        ("LOG_LEVEL", "LOUD", "not one of"),
        ("OPENAI_API", "grpc", "not one of openai, anthropic"),
    ],
)
def test_it_names_the_variable_of_a_bad_value_in_one_line(variable, value, words):
    result = run(["manage.py", "check"], SECRET_KEY="x", CHAT_MODELS="openai/gpt-4.1-mini", **{variable: value})
    assert result.returncode == 1
    assert result.stderr == f"chatsite: {variable}={value!r} is {result.stderr.split(' is ', 1)[1]}"
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_it_reads_yes_no_values_in_any_common_spelling():
    for value, expected in (("1", True), ("TRUE", True), ("on", True), ("no", False), ("0", False), ("", False)):
        result = run(["-c", "import chatsite.settings as s; print(s.DEBUG)"], SECRET_KEY="x", DEBUG=value)
        assert result.stdout.strip() == str(expected), (value, result.stderr)


def test_it_says_in_one_line_that_production_needs_a_secret_key():
    for command in (["manage.py", "migrate"], ["-c", "import chatsite.asgi"]):
        result = run(command, DEBUG="0")
        assert result.returncode == 1
        assert result.stderr == "chatsite: SECRET_KEY is not set: set it (or DEBUG=1 for a development key).\n"
