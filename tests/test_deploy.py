"""Production settings from the environment: `check --deploy` clean, static files hashed and cached for good."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The production variables README's "Deploying" section documents.
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k3v9-deploy-test-secret-key-with-more-than-fifty-characters-0123456789",
    "ALLOWED_HOSTS": "chat.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto,https",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
}

STATIC_HEADERS = """
import asyncio, django
django.setup()
from django.templatetags.static import static
from django.test import AsyncClient
url = static("chat/chat.js")
response = asyncio.run(AsyncClient().get(url, headers={"x-forwarded-proto": "https"}, HTTP_HOST="chat.example.com"))
print(url, response.status_code, response.headers.get("Cache-Control"))
"""


def run(args, tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "SECURE_", "DJANGO_", "REDIS"))}
    clean.update(PRODUCTION, STATIC_ROOT=str(tmp_path / "static"), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
                 DJANGO_SETTINGS_MODULE="chatsite.settings", **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_it_passes_check_deploy_with_the_documented_production_variables(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path)
    assert result.returncode == 1 and "chat.W005" in result.stderr  # collectstatic has not run yet
    assert run(["manage.py", "collectstatic", "--noinput", "-v0"], tmp_path).returncode == 0
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_it_warns_about_each_missing_production_variable(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path,
                 SECURE_SSL_REDIRECT="", SESSION_COOKIE_SECURE="", SECURE_HSTS_SECONDS="")
    for warning in ("security.W004", "security.W008", "security.W012"):
        assert warning in result.stderr


def test_it_serves_hashed_static_files_with_a_far_future_cache_lifetime(tmp_path):
    assert run(["manage.py", "collectstatic", "--noinput", "-v0"], tmp_path).returncode == 0
    result = run(["-c", STATIC_HEADERS], tmp_path)
    url, status, cache_control = result.stdout.split(" ", 2)
    assert url.startswith("/static/chat/chat.") and url != "/static/chat/chat.js", url
    assert status == "200"
    assert "max-age=315360000" in cache_control and "immutable" in cache_control


def test_it_reads_the_proxy_header_as_header_and_value():
    from chatsite import env

    assert env.header_pair("X-Forwarded-Proto,https") == ("HTTP_X_FORWARDED_PROTO", "https")
    assert env.header_pair("HTTP_X_FORWARDED_PROTO, https") == ("HTTP_X_FORWARDED_PROTO", "https")
