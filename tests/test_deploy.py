"""Production settings from the environment: `check --deploy` clean, static files hashed and cached for good."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SECRET = "k3v9-deploy-test-secret-key-with-more-than-fifty-characters-0123456789"


def documented_environment():
    """Return the production variables README's "Deploying behind nginx" section lists (SECRET_KEY filled in)."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- production-env[^>]*-->\s*```sh\n(.*?)```", readme, re.S)
    assert found, "README has no production environment after its <!-- production-env --> marker"
    variables = {}
    for line in found.group(1).splitlines():
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if name:
            variables[name] = value
    assert variables.pop("SECRET_KEY") == "..."
    return {**variables, "SECRET_KEY": SECRET}


PRODUCTION = documented_environment()

STATIC_HEADERS = """
import asyncio
from chatsite.asgi import application  # as daphne serves it: static files are the handler's, not a middleware's
from django.templatetags.static import static

async def get(url):
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": url, "raw_path": url.encode(),
             "query_string": b"", "scheme": "http", "server": ("chat.example.com", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"chat.example.com"), (b"x-forwarded-proto", b"https")]}
    sent, requested = [], [{"type": "http.request", "body": b""}]
    async def receive():
        return requested.pop() if requested else await asyncio.Event().wait()
    async def send(message):
        sent.append(message)
    await application(scope, receive, send)
    return sent[0]["status"], dict((k.decode().lower(), v.decode()) for k, v in sent[0]["headers"])

url = static("chat/chat.js")
status, headers = asyncio.run(get(url))
print(url, status, headers.get("cache-control"))
"""

def run(args, tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "SECURE_", "DJANGO_", "REDIS"))}
    clean.update(PRODUCTION, STATIC_ROOT=str(tmp_path / "static"), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
                 DJANGO_SETTINGS_MODULE="chatsite.settings", **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Return a directory whose STATIC_ROOT `collectstatic` has filled."""
    path = tmp_path_factory.mktemp("deploy")
    assert run(["manage.py", "collectstatic", "--noinput", "-v0"], path).returncode == 0
    return path


def test_it_asks_for_collectstatic_before_it_has_run(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path)
    assert result.returncode == 1 and "chat.W005" in result.stderr


def test_it_passes_check_deploy_with_the_documented_production_variables(collected):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], collected)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_it_warns_about_each_missing_production_variable(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path,
                 SECURE_SSL_REDIRECT="", SESSION_COOKIE_SECURE="", SECURE_HSTS_SECONDS="")
    for warning in ("security.W004", "security.W008", "security.W012"):
        assert warning in result.stderr


def test_it_serves_hashed_static_files_with_a_far_future_cache_lifetime(collected):
    result = run(["-c", STATIC_HEADERS], collected)
    url, status, cache_control = result.stdout.split(" ", 2)
    assert url.startswith("/static/chat/chat.") and url != "/static/chat/chat.js", url
    assert status == "200"
    assert "max-age=315360000" in cache_control and "immutable" in cache_control


def test_it_reads_the_proxy_header_as_header_and_value():
    from chatsite import env

    assert env.header_pair("X-Forwarded-Proto,https") == ("HTTP_X_FORWARDED_PROTO", "https")
    assert env.header_pair("HTTP_X_FORWARDED_PROTO, https") == ("HTTP_X_FORWARDED_PROTO", "https")
