"""Settings for chatsite: every value comes from the environment (or a `.env` file at the root)."""

import os
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from chatsite import env

BASE_DIR = Path(__file__).resolve().parent.parent

# A `.env` file at the root fills in what the environment does not set; chatsite.env reads the result.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.boolean("DEBUG", False)

SECRET_KEY = env.string("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is not set: set it (or DEBUG=1 for a development key).")
    if os.environ.get("RUN_MAIN") != "true":  # runserver's reloader child: its parent has said it
        warnings.warn("SECRET_KEY is not set: using an insecure development key.", stacklevel=1)
    SECRET_KEY = "chatsite-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.strings("ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
# Behind a TLS-terminating proxy: what `manage.py check --deploy` asks for, all from the environment.
CSRF_TRUSTED_ORIGINS = env.read("CSRF_TRUSTED_ORIGINS", [], env.origins)
SECURE_PROXY_SSL_HEADER = env.read("SECURE_PROXY_SSL_HEADER", None, env.header_pair)
SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env.boolean("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env.boolean("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env.boolean("CSRF_COOKIE_SECURE", False)
# Websocket origins allowed besides the page's own (same scheme, host and port as the socket).
CHAT_ALLOWED_ORIGINS = env.read("CHAT_ALLOWED_ORIGINS", [], env.origins)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",
    "django.contrib.staticfiles",
    "channels",
    "chat",
    "billing",
    "gateway",
]

# All sync, run in one thread hand-off a request by chatsite.handler, which serves static files
# (ServeStatic, async-only) before this chain, with SecurityMiddleware's headers.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chatsite.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Worker threads for HTTP requests (chatsite.handler): requests served at once, each thread with its database connection.
HTTP_THREADS = env.integer("HTTP_THREADS", 8, minimum=1)

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite by default; any django-environ URL (PostgreSQL in production).
DATABASES = {"default": env.read("DATABASE_URL", env.database(f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), env.database)}
# Connections are reused, or every database_sync_to_async call would open a new one: PostgreSQL
# through psycopg's pool (Django's advice under ASGI, where each HTTP request has its own thread),
# SQLite (a file open) as persistent connections.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "pool", {"min_size": 2, "max_size": env.integer("DB_POOL_SIZE", 20, minimum=2), "timeout": 10}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.integer("CONN_MAX_AGE", 600, minimum=0))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA mmap_size=2000000000;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer and cache: in-memory by default, Redis when REDIS_URL is set (several processes).
REDIS_URL = env.string("REDIS_URL")
# Redis connections per process for the cache (sessions, rate limits): one pool, shared (chatsite/redis_pool.py).
REDIS_POOL_SIZE = env.integer("REDIS_POOL_SIZE", 20, minimum=1)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A layer receive blocks in BZPOPMIN for channels-redis's 5 s; redis-py's default socket
            # timeout is also 5 s, so without a longer one the read times out first, every time.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "chatsite",
            # One pool per process, shared by every request and socket; a caller waits up to 10 s for a connection.
            "OPTIONS": {"pool_class": "chatsite.redis_pool.SharedConnectionPool",
                        "max_connections": REDIS_POOL_SIZE, "timeout": 10, "client_name": "chatsite-cache"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Sessions own anonymous conversations: written to the database once, read from the cache.
SESSION_ENGINE = "chat.session_store"  # cached_db, without the SELECT before a new session is inserted
SESSION_COOKIE_AGE = env.integer("SESSION_COOKIE_AGE", 60 * 60 * 24 * 30, minimum=60)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.string("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.string("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
# Under DEBUG=0, after `collectstatic`: hashed, compressed names served with a far-future Cache-Control
# by ServeStatic; before it, the plain names (and `check --deploy` says to run it).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
        else "chatsite.staticfiles.HashedStaticFilesStorage"
    },
}
SERVESTATIC_USE_FINDERS = True  # the source files, for a process started before `collectstatic`

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in ("UserAttributeSimilarityValidator", "MinimumLengthValidator", "CommonPasswordValidator",
                 "NumericPasswordValidator")
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LOG_LEVEL = env.read("LOG_LEVEL", "", str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL or "WARNING"},
    "loggers": {
        # Django's own console handler (DEBUG only) printed what also reaches the root handler: every
        # runserver request twice. Its records go to the root handler alone.
        "django": {"handlers": [], "level": LOG_LEVEL or "INFO"},
        "chat": {"level": LOG_LEVEL or "INFO"},
        "billing": {"level": LOG_LEVEL or "INFO"},
    },
}

# --- chat -----------------------------------------------------------------------------------

PROVIDER_DEFAULTS = {
    "openai": {"base_url": "https://api.openai.com/v1", "api": "openai"},
    "anthropic": {"base_url": "https://api.anthropic.com", "api": "anthropic"},
}
WIRE_PROTOCOLS = ("openai", "anthropic", "demo")


def _models(raw):
    """Return the model ids from CHAT_MODELS, each checked to be `provider/model`."""
    models = [m.strip() for m in raw if m.strip()]
    for model in models:
        prefix, _, name = model.partition("/")
        if not prefix or not name:
            raise ImproperlyConfigured(
                f"CHAT_MODELS: {model!r} is not of the form provider/model (e.g. openai/gpt-4.1-mini)."
            )
    if not models:
        raise ImproperlyConfigured("CHAT_MODELS is empty: name at least one provider/model.")
    return models


def _provider(prefix):
    """Return one provider's settings from <PREFIX>_BASE_URL, <PREFIX>_API_KEY and <PREFIX>_API."""
    upper = prefix.upper().replace("-", "_")
    defaults = PROVIDER_DEFAULTS.get(prefix, {})
    api = "demo" if prefix == "demo" else env.string(f"{upper}_API", defaults.get("api", "openai"),
                                                     choices=("openai", "anthropic"))
    return {
        "api": api,
        "base_url": env.string(f"{upper}_BASE_URL", defaults.get("base_url", "")).rstrip("/"),
        "api_key": env.string(f"{upper}_API_KEY"),
    }


CHAT_MODELS = _models(env.strings("CHAT_MODELS", ["demo/assistant"]))
CHAT_PROVIDERS = {prefix: _provider(prefix) for prefix in {m.split("/", 1)[0] for m in CHAT_MODELS}}

# Accounts: the page and the socket only for signed-in users; visitors may create an account.
CHAT_REQUIRE_LOGIN = env.boolean("CHAT_REQUIRE_LOGIN", False)
CHAT_ALLOW_SIGNUP = env.boolean("CHAT_ALLOW_SIGNUP", False)

# Deltas after the first are coalesced into at most one frame per this many milliseconds.
CHAT_FLUSH_MS = env.integer("CHAT_FLUSH_MS", 30, minimum=0, maximum=10_000)
CHAT_SYSTEM_PROMPT = env.string("CHAT_SYSTEM_PROMPT", "You are a helpful assistant.")
CHAT_MAX_PROMPT_CHARS = env.integer("CHAT_MAX_PROMPT_CHARS", 32_000, minimum=1)
CHAT_MAX_HISTORY_CHARS = env.integer("CHAT_MAX_HISTORY_CHARS", 64_000, minimum=0)
CHAT_MAX_TOKENS = env.integer("CHAT_MAX_TOKENS", 1024, minimum=1)
CHAT_MAX_CONCURRENT = env.integer("CHAT_MAX_CONCURRENT", 2000, minimum=1)
CHAT_QUEUE_TIMEOUT = env.number("CHAT_QUEUE_TIMEOUT", 2.0, minimum=0)
# Per person: messages a minute (0: no limit) and USD a day (unset: no budget).
CHAT_RATE_LIMIT = env.integer("CHAT_RATE_LIMIT", 0, minimum=0)
CHAT_DAILY_BUDGET_USD = env.decimal("CHAT_DAILY_BUDGET_USD", None, minimum=0)
# Per client address (the socket's peer, or X-Forwarded-For from CHAT_TRUSTED_PROXIES), and site-wide.
CHAT_TRUSTED_PROXIES = env.strings("CHAT_TRUSTED_PROXIES", [])
CHAT_IP_RATE_LIMIT = env.integer("CHAT_IP_RATE_LIMIT", 60, minimum=0)
CHAT_ADDRESS_DAILY_BUDGET_USD = env.decimal("CHAT_ADDRESS_DAILY_BUDGET_USD", CHAT_DAILY_BUDGET_USD, minimum=0)
CHAT_SITE_DAILY_BUDGET_USD = env.decimal("CHAT_SITE_DAILY_BUDGET_USD", None, minimum=0)
CHAT_UNPRICED_USD_PER_MTOK = env.decimal("CHAT_UNPRICED_USD_PER_MTOK", None, minimum=0)
CHAT_BUDGET_HOLD_SECONDS = env.integer("CHAT_BUDGET_HOLD_SECONDS", 900, minimum=60)
CHAT_MAX_INFLIGHT_PER_PERSON = env.integer("CHAT_MAX_INFLIGHT_PER_PERSON", 3, minimum=0)
CHAT_MAX_INFLIGHT_PER_ADDRESS = env.integer("CHAT_MAX_INFLIGHT_PER_ADDRESS", 20, minimum=0)
CHAT_MAX_SOCKETS_PER_PERSON = env.integer("CHAT_MAX_SOCKETS_PER_PERSON", 20, minimum=0)
CHAT_MAX_SOCKETS_PER_ADDRESS = env.integer("CHAT_MAX_SOCKETS_PER_ADDRESS", 100, minimum=0)
CHAT_RETRIES = env.integer("CHAT_RETRIES", 2, minimum=0, maximum=10)
CHAT_RETRY_BACKOFF = env.number("CHAT_RETRY_BACKOFF", 0.5, minimum=0)
CHAT_RETRY_MAX_WAIT = env.number("CHAT_RETRY_MAX_WAIT", 20.0, minimum=0)
# Timeouts in seconds; below a tenth of a second every real request would fail.
CHAT_CONNECT_TIMEOUT = env.number("CHAT_CONNECT_TIMEOUT", 10.0, minimum=0.1)
CHAT_FIRST_TOKEN_TIMEOUT = env.number("CHAT_FIRST_TOKEN_TIMEOUT", 60.0, minimum=0.1)
CHAT_STALL_TIMEOUT = env.number("CHAT_STALL_TIMEOUT", 30.0, minimum=0.1)
CHAT_MAX_EVENT_BYTES = env.integer("CHAT_MAX_EVENT_BYTES", 1_048_576, minimum=1024)
# A reply whose person left keeps generating this long for them to come back (reload, reconnect,
# another tab); 0 ends it at the disconnect. On SIGTERM, replies in flight get this long to finish.
CHAT_RESUME_GRACE_S = env.number("CHAT_RESUME_GRACE_S", 20.0, minimum=0, maximum=3600)
CHAT_SHUTDOWN_TIMEOUT = env.number("CHAT_SHUTDOWN_TIMEOUT", 10.0, minimum=0, maximum=3600)
# Who sees each reply's token counts and cost: everyone, staff users only, or nobody.
CHAT_SHOW_USAGE = env.string("CHAT_SHOW_USAGE", "all", choices=("all", "staff", "none"))
# The demo model's pace: time to first token and gap between tokens, in milliseconds.
CHAT_DEMO_TTFT_MS = env.integer("CHAT_DEMO_TTFT_MS", 350, minimum=0)
CHAT_DEMO_GAP_MS = env.integer("CHAT_DEMO_GAP_MS", 25, minimum=0)

# --- gateway (the OpenAI-compatible endpoint) -------------------------------------------------
API_MAX_BODY_BYTES = env.integer("API_MAX_BODY_BYTES", 1_048_576, minimum=1024)
