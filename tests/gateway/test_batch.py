"""manage.py batch: validation, the cost preflight, and a 50-line job with faults, interrupted and resumed."""

import json
import signal
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from tests.gateway.conftest import ROOT, server_env
from tests.processes import wait_for

NORMAL = "mock/gpt-4.1-mini+gap=15+tokens=20"
RECOVERS = ["mock/x+fault=500x3", "mock/x+fault=429x3+retry_after=0.05"]  # fail more often than the provider retries
FAILS = {"mock/x+fault=400": 400, "mock/x+fault=drop_mid": 502}  # every attempt fails
MODELS = [NORMAL, *RECOVERS, *FAILS]


def line(custom_id, model=NORMAL, **body):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"tag {custom_id}"}], **body}}


def write_input(path, lines):
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def fifty_lines():
    """Return 50 lines: 40 that succeed (10 after failures the batch must retry) and 5 that always fail."""
    models = [NORMAL] * 35 + [RECOVERS[0]] * 5 + [RECOVERS[1]] * 5 + ["mock/x+fault=400"] * 3 + ["mock/x+fault=drop_mid"] * 2
    order = [models[(i * 7) % 50] for i in range(50)]  # spread the faults through the file
    return [line(f"req-{i:02d}", model, max_tokens=100) for i, model in enumerate(order)]


def read_output(path):
    return [json.loads(raw) for raw in path.read_text().splitlines()]


def start_batch(database, mock_upstream, *args):
    env = server_env(database, mock_upstream.base_url)
    env.update(CHAT_MODELS=",".join(MODELS), CHAT_RETRY_BACKOFF="0.01")
    return subprocess.Popen([sys.executable, "manage.py", "batch", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_it_runs_is_interrupted_and_resumes_without_repeating_a_line(orm, database, mock_upstream, tmp_path):
    from billing.models import UsageRecord

    source = write_input(tmp_path / "input.jsonl", fifty_lines())
    output = tmp_path / "output.jsonl"
    mock_upstream.wait_idle(10)
    mock_upstream.reset()

    first = start_batch(database, mock_upstream, source, "--output", output, "--concurrency", "4")
    wait_for(lambda: output.exists() and len(output.read_text().splitlines()) >= 10, timeout=60,
             what="ten finished lines")
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 130, err
    assert "Interrupted" in out and "resume" in out
    done_first = {item["custom_id"] for item in read_output(output)}  # every line is whole JSON
    assert 10 <= len(done_first) < 50
    assert mock_upstream.wait_idle(10)  # the lines in flight were closed upstream
    mock_upstream.reset()

    second = start_batch(database, mock_upstream, source, "--output", output, "--concurrency", "4")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert f"{len(done_first)} already done" in out and "--retry-errors" in out
    assert "done" in err and "ETA" in err  # the progress line
    items = read_output(output)
    assert sorted(item["custom_id"] for item in items) == [f"req-{i:02d}" for i in range(50)]
    tags = {entry["tag"] for entry in mock_upstream.stats()["log"]}
    assert not tags & {f"tag {custom_id}" for custom_id in done_first}, "a finished line was sent again"

    inputs = {item["custom_id"]: item["body"]["model"] for item in fifty_lines()}
    records = {str(r.request_id): r for r in UsageRecord.objects.filter(channel="batch")}
    for item in items:  # output and records reconcile line by line
        response, model = item["response"], inputs[item["custom_id"]]
        record = records[response["request_id"]]
        assert item["id"] == f"batch_req_{record.request_id.hex}" and record.model == model
        if model in FAILS:
            assert response["status_code"] == FAILS[model] and item["error"]["code"] == response["body"]["error"]["code"]
            assert record.status == "failed"
            continue
        usage = response["body"]["usage"]
        assert response["status_code"] == 200 and item["error"] is None
        assert response["body"]["choices"][0]["message"]["content"].split() and record.status == "completed"
        assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert usage["completion_tokens"] == 20 if model == NORMAL else usage["completion_tokens"] > 0
    assert sum(item["error"] is not None for item in items) == 5

    mock_upstream.reset()
    third = start_batch(database, mock_upstream, source, "--output", output, "--retry-errors")
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert "45 already done" in out
    retried = {entry["tag"] for entry in mock_upstream.stats()["log"]}
    assert retried == {f"tag {item['custom_id']}" for item in items if item["error"] is not None}
    assert sorted(item["custom_id"] for item in read_output(output)) == [f"req-{i:02d}" for i in range(50)]


def run(*args):
    call_command("batch", *map(str, args))


@pytest.mark.django_db
@pytest.mark.parametrize("raw, message", [
    ('{"custom_id": "a"', "line 2: not valid JSON"),
    (json.dumps(line("first")), "line 2: custom_id 'first' is used by an earlier line"),
    (json.dumps({**line("b"), "url": "/v1/embeddings"}), "line 2 (b): method must be POST and url"),
    (json.dumps(line("c", model="openai/unknown")), "line 2 (c): The model 'openai/unknown' does not exist"),
    (json.dumps(line("d", max_tokens=-1)), "line 2 (d): 'max_tokens' must be a positive integer. (max_tokens)"),
])
def test_it_checks_the_whole_file_before_any_request(settings, tmp_path, mock_upstream, raw, message):
    settings.CHAT_MODELS = [NORMAL]
    mock_upstream.reset()
    source = tmp_path / "input.jsonl"
    source.write_text(json.dumps(line("first")) + "\n" + raw + "\n" + json.dumps(line("last")) + "\n")
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(source, "--output", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists() and mock_upstream.stats()["requests"] == 0


@pytest.mark.django_db
def test_it_refuses_a_job_whose_worst_case_passes_max_cost(settings, tmp_path, mock_upstream):
    from billing.models import ModelPrice

    settings.CHAT_MODELS = [NORMAL]
    ModelPrice.objects.create(model=NORMAL, input_per_mtok=Decimal("10"), output_per_mtok=Decimal("10"))
    mock_upstream.reset()
    source = write_input(tmp_path / "input.jsonl", [line(f"r{i}", max_tokens=1000) for i in range(10)])
    # Each line could use ~1,030 tokens at $10/Mtok: ~$0.0103, so ten lines ~$0.103.
    with pytest.raises(CommandError, match=r"could cost up to \$0\.10.*over --max-cost \$0\.05"):
        run(source, "--output", tmp_path / "out.jsonl", "--max-cost", "0.05")
    assert mock_upstream.stats()["requests"] == 0
