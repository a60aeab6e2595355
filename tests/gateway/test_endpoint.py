"""POST /v1/chat/completions and GET /v1/models through the official openai SDK, against a live server."""

import json

import httpx
import openai
import pytest

from chat.mock_upstream.plan import WORDS
from tests.gateway.conftest import ANTHROPIC, FAILING, FAST, NO_USAGE, SLOW, STALLING, client
from tests.processes import wait_for

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


def records_for(key_prefix, count=1):
    """Wait for `count` usage records of the key whose raw form starts with `key_prefix`; return them."""
    from billing.models import UsageRecord

    def read():
        found = list(UsageRecord.objects.filter(api_key__prefix=key_prefix[:10]).select_related("abandonment"))
        return found if len(found) >= count else None

    return wait_for(read, what=f"{count} usage record(s)")


def assert_generated(text, tokens):
    words = text.split()
    assert len(words) == tokens and set(words) <= set(WORDS), text


@pytest.mark.parametrize("model", [FAST, ANTHROPIC])
def test_it_streams_in_openai_chunks(api, make_key, mock_upstream, model):
    key = make_key()
    stream = client(api, key).chat.completions.create(
        model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_generated(text, 12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    prompt_tokens = mock_upstream.stats()["log"][0]["prompt_tokens"]
    assert chunks[-1].usage.prompt_tokens == prompt_tokens
    [record] = records_for(key)
    assert (record.channel, record.status, record.streamed, record.estimated) == ("api", "completed", True, False)
    assert (record.prompt_tokens, record.completion_tokens) == (prompt_tokens, 12)
    assert record.cost_usd > 0 and record.api_key.prefix == key[:10]


@pytest.mark.parametrize("model", [FAST, ANTHROPIC])
def test_it_answers_a_whole_completion(api, make_key, model):
    key = make_key()
    completion = client(api, key).chat.completions.create(model=model, messages=HELLO, max_tokens=5)
    assert completion.object == "chat.completion" and completion.model == model
    assert completion.choices[0].message.role == "assistant"
    assert_generated(completion.choices[0].message.content, 5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5
    [record] = records_for(key)
    assert (record.status, record.streamed, record.completion_tokens, record.finish_reason) == (
        "completed", False, 5, "length" if model == FAST else "max_tokens")


def test_it_sends_no_usage_chunk_unless_asked_but_records_usage(api, make_key):
    key = make_key()
    chunks = list(client(api, key).chat.completions.create(model=FAST, messages=HELLO, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    [record] = records_for(key)
    assert (record.completion_tokens, record.estimated) == (12, False)


def test_it_estimates_usage_the_upstream_did_not_report(api, make_key):
    key = make_key()
    chunks = list(client(api, key).chat.completions.create(model=NO_USAGE, messages=HELLO, stream=True))
    assert_generated("".join(c.choices[0].delta.content or "" for c in chunks), 12)
    [record] = records_for(key)
    assert (record.status, record.estimated, record.completion_tokens) == ("completed", True, 12)
    assert record.prompt_tokens > 0


def test_it_lists_the_models_a_key_may_use(api, make_key):
    assert [m.id for m in client(api, make_key()).models.list()][:2] == [FAST, ANTHROPIC]
    limited = make_key(allowed_models=f"{ANTHROPIC}, {SLOW}")
    assert [m.id for m in client(api, limited).models.list()] == [ANTHROPIC, SLOW]


def test_it_refuses_bad_keys_with_401_before_any_upstream_request(api, make_key, mock_upstream):
    from django.utils import timezone

    from gateway.models import ApiKey

    revoked, expired = make_key(), make_key(expires=timezone.now())
    ApiKey.objects.get(prefix=revoked[:10]).revoke()
    for key in ("cs-not-a-key", revoked, expired, "sk-something-else"):
        with pytest.raises(openai.AuthenticationError) as caught:
            client(api, key).chat.completions.create(model=FAST, messages=HELLO, stream=True)
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key" and caught.value.body["type"] == "invalid_request_error"
    response = httpx.post(api + "/v1/chat/completions", json={"model": FAST, "messages": HELLO})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
    assert mock_upstream.stats()["requests"] == 0


def test_it_refuses_models_that_are_unknown_or_not_allowed(api, make_key, mock_upstream):
    key = make_key(allowed_models=FAST)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(api, key).chat.completions.create(model=ANTHROPIC, messages=HELLO)
    assert caught.value.body["code"] == "model_not_allowed" and caught.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        client(api, key).chat.completions.create(model="openai/gpt-5", messages=HELLO)
    assert caught.value.body["code"] == "model_not_found"
    assert mock_upstream.stats()["requests"] == 0


def test_it_names_the_field_of_a_bad_request(api, make_key, mock_upstream):
    key = make_key()
    headers = {"Authorization": f"Bearer {key}"}
    cases = [
        (b"{not json", "invalid_json", None),
        (json.dumps({"model": FAST, "messages": []}), "invalid_value", "messages"),
        (json.dumps({"model": FAST, "messages": [{"role": "user", "content": 3}]}), "invalid_type",
         "messages.[0].content"),
        (json.dumps({"model": FAST, "messages": HELLO, "max_tokens": 0}), "invalid_value", "max_tokens"),
    ]
    for body, code, param in cases:
        response = httpx.post(api + "/v1/chat/completions", content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code and response.json()["error"]["param"] == param
    response = httpx.get(api + "/v1/chat/completions", headers=headers)
    assert response.status_code == 405 and "error" in response.json()
    assert mock_upstream.stats()["requests"] == 0


def test_it_rate_limits_a_key_with_retry_after(api, make_key, mock_upstream):
    key = make_key(rate_limit=2)
    sdk = client(api, key)
    for _ in range(2):
        sdk.chat.completions.create(model=FAST, messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=FAST, messages=HELLO)
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert mock_upstream.stats()["requests"] == 2


def test_it_answers_502_when_the_upstream_fails_before_replying(api, make_key, mock_upstream):
    key = make_key()
    with pytest.raises(openai.InternalServerError) as caught:
        client(api, key).chat.completions.create(model=FAILING, messages=HELLO, stream=True)
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_error"
    assert mock_upstream.stats()["requests"] == 3  # the provider's two retries, then the answer
    [record] = records_for(key)
    assert (record.status, record.retries, record.channel) == ("failed", 2, "api")


def test_it_answers_504_when_the_first_token_is_overdue(api, make_key, mock_upstream):
    key = make_key()
    with pytest.raises(openai.InternalServerError) as caught:
        client(api, key).chat.completions.create(model=STALLING, messages=HELLO)
    assert caught.value.status_code == 504 and caught.value.body["code"] == "upstream_timeout"
    wait_for(lambda: mock_upstream.stats()["closed_early"] == 1, what="the upstream request to be closed")
    [record] = records_for(key)
    assert record.status == "failed" and "no reply within" in record.error


def test_it_closes_the_upstream_when_the_client_disconnects(api, make_key, mock_upstream):
    key = make_key()
    stream = client(api, key).chat.completions.create(model=SLOW, messages=HELLO, stream=True)
    received = [next(stream) for _ in range(4)]  # the role chunk and three deltas
    assert received[1].choices[0].delta.content
    stream.close()
    wait_for(lambda: mock_upstream.stats()["closed_early"] == 1, timeout=5, what="the mock to see the hang-up")
    stats = mock_upstream.stats()
    assert stats["completed"] == 0 and stats["log"][0]["tokens_sent"] < 100
    [record] = records_for(key)
    assert (record.status, record.estimated) == ("disconnected", True)
    assert record.completion_tokens >= 3
    assert (record.abandonment.reason, record.abandonment.phase) == ("disconnect", "streaming")
    assert record.abandonment.tokens_delivered >= 3
