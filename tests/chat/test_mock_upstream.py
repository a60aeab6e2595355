import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from billing.models import UsageRecord
from chat.mock_upstream.plan import CANNED
from chat.providers import TOKEN
from chat.sse import SSEDecoder
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow
from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def http(mock):
    with httpx.Client(base_url=mock.base_url, timeout=10) as client:
        yield client


def openai(model, content="hello world", stream=True, usage=True, **extra):
    """Return a chat completions request body."""
    body = {"model": model, "messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": content}], **extra}
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return body


def anthropic(model, content="hello world", stream=True, max_tokens=100):
    """Return a Messages API request body."""
    body = {"model": model, "system": "be brief", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return body


def sse(data):
    """Return the events in an event-stream body."""
    decoder = SSEDecoder()
    events = decoder.feed(data)
    tail = decoder.close()
    return events + ([tail] if tail else [])


def chunks(data):
    """Return an OpenAI stream's JSON chunks, and whether it ended in [DONE]."""
    events = sse(data)
    done = bool(events) and events[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events if e.data != "[DONE]"], done


def token_count(events):
    """Return how many events of either protocol carry reply text."""
    count = 0
    for event in events:
        data = json.loads(event.data)
        if event.event == "content_block_delta" or data.get("choices") and data["choices"][0]["delta"].get("content"):
            count += 1
    return count


def read_until_stuck(response, timeout_s=0.5):
    """Return the bytes a stream sent before going quiet for `timeout_s` (a stall)."""
    received = b""
    with pytest.raises(httpx.ReadTimeout):
        for data in response.iter_raw():
            received += data
    return received


def stuck_client(mock):
    return httpx.Client(base_url=mock.base_url, timeout=httpx.Timeout(10, read=0.5))


def test_it_streams_openai_chunks(http, mock):
    response = http.post("/v1/chat/completions", json=openai("gpt-4.1-mini"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    parts, done = chunks(response.content)
    assert done
    assert parts[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    tokens = parts[1:13]
    assert all(p["usage"] is None and p["choices"][0]["finish_reason"] is None for p in tokens)
    text = "".join(p["choices"][0]["delta"]["content"] for p in tokens)
    assert len(text.split()) == 12 and text.endswith(" ")
    assert parts[13]["choices"][0]["finish_reason"] == "stop"
    assert parts[14]["choices"] == []
    # "be brief" + "hello world" = 19 characters -> 5 tokens
    assert parts[14]["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    assert len(parts) == 15
    assert {p["model"] for p in parts} == {"gpt-4.1-mini-2025-04-14"}
    stats = mock.stats()
    assert (stats["requests"], stats["completed"], stats["tokens_sent"], stats["open_streams"]) == (1, 1, 12, 0)
    [entry] = stats["log"]
    assert entry["tag"] == "hello world"
    assert entry["status"] == "completed" and entry["http_status"] == 200 and entry["stream"] is True
    assert entry["prompt_tokens"] == 5 and entry["tokens_sent"] == 12
    assert abs(entry["first_token_at"] - time.time()) < 60


def test_it_repeats_a_reply_for_the_same_request(http):
    first = http.post("/v1/chat/completions", json=openai("gpt-4.1-mini")).content
    again = http.post("/v1/chat/completions", json=openai("gpt-4.1-mini")).content
    other = http.post("/v1/chat/completions", json=openai("gpt-4.1-mini", content="something else")).content

    def text(data):
        return "".join(p["choices"][0]["delta"].get("content", "") for p in chunks(data)[0] if p["choices"])

    assert text(first) == text(again) != text(other)


def test_it_sends_usage_only_when_asked(http):
    parts, done = chunks(http.post("/v1/chat/completions", json=openai("gpt-4.1-mini", usage=False)).content)
    assert done
    assert all(p["choices"] for p in parts)
    assert parts[-1]["choices"][0]["finish_reason"] == "stop"


def test_it_applies_options_from_the_model_name(http):
    response = http.post("/v1/chat/completions", json=openai("gpt-4.1-mini+tokens=30+cached=3+gap=0+ttft=0"))
    parts, _ = chunks(response.content)
    assert parts[-1]["usage"]["completion_tokens"] == 30
    assert parts[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    assert parts[-1]["model"] == "gpt-4.1-mini-2025-04-14"


def test_it_stops_at_max_tokens(http):
    parts, _ = chunks(http.post("/v1/chat/completions", json=openai("gpt-4.1-mini", max_tokens=5)).content)
    assert parts[-2]["choices"][0]["finish_reason"] == "length"
    assert parts[-1]["usage"]["completion_tokens"] == 5


def test_it_answers_openai_without_streaming(http, mock):
    response = http.post("/v1/chat/completions", json=openai("gpt-4.1-mini+tokens=4", stream=False))
    assert response.headers["content-length"] == str(len(response.content))
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "gpt-4.1-mini-2025-04-14"
    assert len(completion["choices"][0]["message"]["content"].split()) == 4
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["prompt_tokens"] == 5 and completion["usage"]["completion_tokens"] == 4
    assert mock.stats()["log"][0]["stream"] is False


def test_it_streams_anthropic_events(http, mock):
    response = http.post("/v1/messages", json=anthropic("claude-sonnet-4-5+tokens=6+cached=2"))
    events = sse(response.content)
    kinds = [e.event for e in events]
    assert kinds == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 6,
                     "content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(e.data) for e in events]
    assert all(d["type"] == e.event for d, e in zip(data, events))
    message = data[0]["message"]
    assert message["model"] == "claude-sonnet-4-5-2025-04-14"
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 2,
                                "cache_creation_input_tokens": 0}
    deltas = [d["delta"] for d in data if d["type"] == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert len("".join(d["text"] for d in deltas).split()) == 6
    assert data[-2]["delta"]["stop_reason"] == "end_turn"
    assert data[-2]["usage"] == {"output_tokens": 6}
    assert mock.stats()["tokens_sent"] == 6


def test_it_answers_anthropic_without_streaming(http):
    message = http.post("/v1/messages", json=anthropic("claude-sonnet-4-5", stream=False, max_tokens=3)).json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["type"] == "text"
    assert len(message["content"][0]["text"].split()) == 3
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"] == {"input_tokens": 5, "output_tokens": 3}


def test_it_requires_max_tokens_for_anthropic(http):
    body = anthropic("claude-sonnet-4-5")
    del body["max_tokens"]
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("reply", ["xss", "markdown"])
def test_it_sends_canned_replies(http, reply):
    parts, _ = chunks(http.post("/v1/chat/completions", json=openai(f"gpt-4.1-mini+reply={reply}")).content)
    tokens = [p["choices"][0]["delta"]["content"] for p in parts[1:-2]]
    assert tokens == TOKEN.findall(CANNED[reply])
    text = "".join(tokens)
    if reply == "xss":
        assert "<img src=x onerror=alert(1)>" in text and "<script>alert(1)</script>" in text
        assert "**bold**" in text
    else:
        assert "\n# " in "\n" + text and "\n- " in text and "```python\n" in text and "|---|" in text


def test_it_answers_the_other_endpoints(http, mock):
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and "gpt-4.1-mini" in [m["id"] for m in models["data"]]
    missing = http.get("/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    http.post("/v1/chat/completions", json=openai("gpt-4.1-mini"))
    stats = http.get("/mock/stats").json()
    assert stats["requests"] == 1 and stats["log"][0]["tag"] == "hello world"
    assert http.post("/mock/reset").json() == {"ok": True}
    assert mock.stats()["requests"] == 0 and mock.stats()["log"] == []


@pytest.mark.parametrize("model", ["gpt-4.1-mini+speed=3", "gpt-4.1-mini+fault=sometimes", "gpt-4.1-mini+gap=x"])
def test_it_refuses_bad_options(http, model):
    response = http.post("/v1/chat/completions", json=openai(model))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "path, body, kind",
    [("/v1/chat/completions", openai, "requests"), ("/v1/messages", anthropic, "rate_limit_error")],
)
def test_it_always_answers_429(http, mock, path, body, kind):
    for _ in range(3):
        response = http.post(path, json=body("m+fault=429+retry_after=7"))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        error = response.json()["error"]
        assert error["type"] == kind and error["message"]
    stats = mock.stats()
    assert stats["error_status"] == 3 and stats["tokens_sent"] == 0
    assert {e["status"] for e in stats["log"]} == {"error_status"}


@pytest.mark.parametrize("fault, status", [("429x2", 429), ("500x1", 500), ("502x1", 502), ("503x1", 503),
                                           ("504x1", 504)])
@pytest.mark.parametrize("path, body", [("/v1/chat/completions", openai), ("/v1/messages", anthropic)])
def test_it_fails_the_first_attempts_then_succeeds(http, path, body, fault, status):
    times = int(fault.split("x")[1])
    request = body(f"m+fault={fault}+retry_after=0")
    for _ in range(2):  # a request that succeeded starts over
        for _ in range(times):
            response = http.post(path, json=request)
            assert response.status_code == status
            assert ("retry-after" in response.headers) == (status == 429)
        assert http.post(path, json=request).status_code == 200
    # Another request has its own attempts.
    assert http.post(path, json=body(f"m+fault={fault}", content="another")).status_code == status


@pytest.mark.parametrize("fault, status, kinds", [
    ("400", 400, ("invalid_request_error", "invalid_request_error")),
    ("401", 401, ("invalid_request_error", "authentication_error")),
    ("500", 500, ("server_error", "api_error")),
    ("503", 503, ("server_error", "overloaded_error")),
])
def test_it_answers_error_statuses(http, fault, status, kinds):
    for _ in range(2):
        openai_error = http.post("/v1/chat/completions", json=openai(f"m+fault={fault}"))
        anthropic_error = http.post("/v1/messages", json=anthropic(f"m+fault={fault}"))
        assert openai_error.status_code == anthropic_error.status_code == status
        assert openai_error.json()["error"]["type"] == kinds[0]
        assert anthropic_error.json()["type"] == "error"
        assert anthropic_error.json()["error"]["type"] == kinds[1]


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", openai), ("/v1/messages", anthropic)])
def test_it_drops_the_connection_before_answering(http, mock, path, body):
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(path, json=body("m+fault=drop_before"))
    assert mock.stats()["log"][0]["status"] == "failed"
    assert http.post(path, json=body("m")).status_code == 200  # the client reconnects


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", openai), ("/v1/messages", anthropic)])
def test_it_stalls_before_the_first_token_until_the_client_leaves(mock, path, body):
    with stuck_client(mock) as client:
        with client.stream("POST", path, json=body("m+fault=stall_first")) as response:
            assert response.status_code == 200
            assert mock.stats()["open_streams"] == 1
            assert read_until_stuck(response) == b""  # httpx closes the connection on a read timeout
    assert mock.wait_idle(10)
    stats = mock.stats()
    assert stats["closed_early"] == 1 and stats["log"][0]["status"] == "closed_early"


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", openai), ("/v1/messages", anthropic)])
def test_it_stalls_mid_stream_until_the_client_leaves(mock, path, body):
    with stuck_client(mock) as client:
        with client.stream("POST", path, json=body("m+fault=stall_mid+after=4")) as response:
            events = sse(read_until_stuck(response))
    assert token_count(events) == 4
    assert mock.wait_idle(10)
    stats = mock.stats()
    assert stats["closed_early"] == 1 and stats["tokens_sent"] == 4 and stats["open_streams"] == 0


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", openai), ("/v1/messages", anthropic)])
def test_it_drops_the_connection_mid_stream(http, mock, path, body):
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", path, json=body("m+fault=drop_mid")) as response:
            for data in response.iter_raw():
                received += data
    assert token_count(sse(received)) == 3
    assert mock.stats()["log"][0]["status"] == "failed"


def test_it_sends_a_malformed_event(http, mock):
    events = sse(http.post("/v1/chat/completions", json=openai("m+fault=malformed+after=2")).content)
    assert len(events) == 4 and events[3].data == "{not json"
    assert [json.loads(e.data)["choices"][0]["delta"]["content"].strip() != "" for e in events[1:3]] == [True] * 2
    assert mock.stats()["log"][0]["status"] == "failed"


def test_it_sends_an_error_event_mid_stream(http):
    openai_events = sse(http.post("/v1/chat/completions", json=openai("m+fault=error_mid")).content)
    assert json.loads(openai_events[-1].data)["error"]["type"] == "server_error"
    assert len(openai_events) == 5  # role, 3 tokens, error
    anthropic_events = sse(http.post("/v1/messages", json=anthropic("m+fault=error_mid+after=1")).content)
    assert [e.event for e in anthropic_events][-2:] == ["content_block_delta", "error"]
    assert json.loads(anthropic_events[-1].data) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_it_leaves_out_usage(http):
    parts, done = chunks(http.post("/v1/chat/completions", json=openai("m+fault=no_usage")).content)
    assert done and all(p["usage"] is None for p in parts)
    events = sse(http.post("/v1/messages", json=anthropic("m+fault=no_usage")).content)
    delta = json.loads(events[-2].data)
    assert delta["type"] == "message_delta" and "usage" not in delta


def test_it_leaves_out_the_end_marker(http):
    parts, done = chunks(http.post("/v1/chat/completions", json=openai("m+fault=no_done")).content)
    assert not done and parts[-1]["usage"]["completion_tokens"] == 12
    events = sse(http.post("/v1/messages", json=anthropic("m+fault=no_done")).content)
    assert events[-1].event == "message_delta"


def test_it_keeps_the_connection_alive(http, mock):
    ports = []
    for path, body in [("/v1/chat/completions", openai), ("/v1/messages", anthropic), ("/v1/messages", anthropic)]:
        with http.stream("POST", path, json=body("m", stream=path == "/v1/messages")) as response:
            ports.append(response.extensions["network_stream"].get_extra_info("socket").getsockname()[1])
            response.read()
    assert len(set(ports)) == 1
    assert mock.stats()["completed"] == 3


def test_it_answers_pipelined_requests_in_order_and_honours_connection_close(mock):
    host, port = mock.base_url.removeprefix("http://").split(":")
    body = json.dumps(openai("m+tokens=2", stream=False)).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
    stream_body = json.dumps(openai("m+tokens=2")).encode()
    stream_request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(stream_body)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(stream_request + b"\r\n" + stream_body + request + b"Connection: close\r\n\r\n" + body)
        received = b""
        while data := sock.recv(65536):  # the server closes after the second response
            received += data
    first, second = received.split(b"\r\n0\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in first
    assert b"data: [DONE]" in first
    head, completion = second.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
    assert json.loads(completion)["usage"]["completion_tokens"] == 2
    assert mock.stats()["completed"] == 2


def test_it_counts_a_client_that_closes_mid_stream(mock):
    with httpx.Client(base_url=mock.base_url, timeout=10) as client:
        with client.stream("POST", "/v1/chat/completions", json=openai("m+tokens=5000+gap=20")) as response:
            assert mock.stats()["open_streams"] == 1
            decoder = SSEDecoder()
            for data in response.iter_raw():  # leaving the loop early closes the connection
                if token_count(decoder.feed(data)):
                    break
    assert mock.wait_idle(10)
    stats = mock.stats()
    assert stats["closed_early"] == 1 and stats["completed"] == 0 and stats["open_streams"] == 0
    assert 1 <= stats["tokens_sent"] < 5000
    assert stats["log"][0]["status"] == "closed_early" and stats["log"][0]["first_token_at"] is not None


def test_it_counts_a_client_that_gives_up_on_a_plain_reply(mock):
    with httpx.Client(base_url=mock.base_url, timeout=httpx.Timeout(10, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/messages", json=anthropic("m+ttft=60000", stream=False))
    assert mock.wait_idle(10)
    assert mock.stats()["closed_early"] == 1


def test_it_runs_as_a_management_command():
    env = {**os.environ, "SECRET_KEY": "x", "DJANGO_SETTINGS_MODULE": "chatsite.settings", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "manage.py", "mock_upstream", "--port", "0", "--tokens", "3", "--ttft-ms", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        base = line.split("listening on ")[1].split()[0]
        response = httpx.post(base + "/v1/chat/completions", json=openai("gpt-4.1-mini", stream=False), timeout=30)
        assert len(response.json()["choices"][0]["message"]["content"].split()) == 3
    finally:
        stop(process, timeout=10)
        process.stdout.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("model", ["mock/gpt-4.1-mini+cached=2", "mockanthropic/claude-sonnet-4-5+cached=2"])
async def test_it_serves_the_chat_consumer(alice_session, settings, use_mock, model):
    allow(settings, model)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello there", "model": model})
    frames = await receive_until_done(ws, timeout=30)
    done = frames[-1]
    assert done["status"] == "completed"
    assert len("".join(f["text"] for f in frames if f["type"] == "delta").split()) == 12
    assert done["usage"]["completion_tokens"] == 12 and done["usage"]["estimated"] is False
    record = await UsageRecord.objects.aget(message_id=done["message"])
    assert record.upstream_model.endswith("-2025-04-14")
    assert record.cached_tokens == 2
    [entry] = use_mock.stats()["log"]
    assert entry["tag"] == "hello there" and entry["status"] == "completed"
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_sees_the_consumer_stop_a_reply(alice_session, settings, use_mock):
    model = "mock/gpt-4.1-mini+tokens=5000+gap=20"
    allow(settings, model)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "write a lot", "model": model})
    while (await ws.receive_json_from(timeout=30))["type"] != "delta":
        pass
    await ws.send_json_to({"type": "stop"})
    frames = await receive_until_done(ws, timeout=30)
    assert frames[-1]["status"] == "stopped"
    assert await use_mock.await_idle(10)
    stats = use_mock.stats()
    assert stats["closed_early"] == 1 and stats["open_streams"] == 0 and stats["tokens_sent"] < 5000
    await ws.disconnect()
