"""The ASGI application as daphne runs it: pages, static files and the websocket route."""

import threading

import pytest
from channels.testing import ApplicationCommunicator
from django.conf import settings
from django.core import signals

from chatsite import csp
from chatsite.asgi import application
from chatsite.handler import Handler

pytestmark = pytest.mark.django_db(transaction=True)


async def get(path, app=application):
    """Return (status, body) of a GET through the whole ASGI application."""
    status, body, _ = await get_with_headers(path, app)
    return status, body


async def get_with_headers(path, app=application):
    """Return (status, body, {lower-case header name: value}) of a GET through `app`."""
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"host", b"localhost")], "scheme": "http",
             "server": ("localhost", 80), "client": ("127.0.0.1", 5000)}
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    return start["status"], body, {k.decode().lower(): v.decode() for k, v in start["headers"]}


async def test_it_serves_the_page_and_its_static_files_without_a_front_server():
    status, page = await get("/")
    assert status == 200 and b"/static/chat/chat.js" in page
    status, script = await get("/static/chat/chat.js")
    assert status == 200 and b"The chat page" in script


async def test_it_answers_404_for_a_missing_static_file():
    status, _ = await get("/static/chat/nope.js")
    assert status == 404


async def test_it_serves_static_files_with_the_security_middlewares_headers():
    status, _, headers = await get_with_headers("/static/chat/chat.js")
    assert status == 200
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == settings.SECURE_REFERRER_POLICY
    assert headers["cross-origin-opener-policy"] == settings.SECURE_CROSS_ORIGIN_OPENER_POLICY


async def test_it_redirects_a_static_file_to_https_when_told_to(settings):
    settings.SECURE_SSL_REDIRECT = True
    status, _, headers = await get_with_headers("/static/chat/chat.js", Handler())
    assert status == 301 and headers["location"] == "https://localhost/static/chat/chat.js"


async def test_it_runs_a_requests_signals_middleware_and_view_in_one_reused_worker_thread(monkeypatch):
    """One thread hand-off a request, on the handler's own threads (not one started per request), and
    the connection checks of request_started and request_finished in the thread that used the connection."""
    seen = []

    def started(**kwargs):
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs):
        seen.append(("finished", threading.current_thread().name))

    add_policy = csp.add_policy

    def add_policy_seen(response):
        seen.append(("middleware", threading.current_thread().name))
        return add_policy(response)

    monkeypatch.setattr(csp, "add_policy", add_policy_seen)
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        for _ in range(20):
            status, _ = await get("/")
            assert status == 200
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert len(seen) == 60
    requests = [seen[i:i + 3] for i in range(0, 60, 3)]
    for request in requests:
        assert [step for step, _ in request] == ["started", "middleware", "finished"]
        assert len({name for _, name in request}) == 1, request
    names = {request[0][1] for request in requests}
    assert all(name.startswith("http") for name in names), names
    assert len(names) <= settings.HTTP_THREADS


async def test_a_served_request_is_freed_at_once_not_left_to_the_collector(monkeypatch):
    """Once answered, a request's objects (its lazy user, messages, session store, the handler's
    tasks) are freed by reference counting, not left as cyclic garbage for the collector, whose pauses
    stall every stream on the event loop. (A page rendered from a template leaves Django's template
    context, itself a cycle, holding the emptied request object: its graph is what is checked there.)"""
    import gc
    import weakref

    from chat.session_store import SessionStore

    requests, stores = [], []
    create_request = Handler.create_request
    store_init = SessionStore.__init__

    def create_request_seen(self, scope, body_file):
        request, error_response = create_request(self, scope, body_file)
        requests.append(weakref.ref(request))
        return request, error_response

    def store_init_seen(self, *args, **kwargs):
        stores.append(weakref.ref(self))
        store_init(self, *args, **kwargs)

    monkeypatch.setattr(Handler, "create_request", create_request_seen)
    monkeypatch.setattr(SessionStore, "__init__", store_init_seen)
    gc.collect()
    gc.disable()
    try:
        for path, expected in (("/", 200), ("/no-such-page/", 404), ("/static/chat/chat.js", 200)):
            status, _ = await get(path)
            assert status == expected, path
        assert len(stores) == 2 and [ref() for ref in stores] == [None, None]  # the page's and the 404's
        assert requests[2]() is None  # the static file's request: no template, freed whole
    finally:
        gc.enable()
