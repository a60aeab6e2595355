"""The ASGI application as daphne runs it: pages, static files and the websocket route."""

import pytest
from channels.testing import ApplicationCommunicator

from chatsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def get(path):
    """Return (status, body) of a GET through the whole ASGI application."""
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"host", b"localhost")], "scheme": "http",
             "server": ("localhost", 80), "client": ("127.0.0.1", 5000)}
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    return start["status"], body


async def test_it_serves_the_page_and_its_static_files_without_a_front_server():
    status, page = await get("/")
    assert status == 200 and b"/static/chat/chat.js" in page
    status, script = await get("/static/chat/chat.js")
    assert status == 200 and b"The chat page" in script


async def test_it_answers_404_for_a_missing_static_file():
    status, _ = await get("/static/chat/nope.js")
    assert status == 404
