from datetime import datetime, timezone
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from billing.models import ModelPrice

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).parent / "data" / "litellm_sample.json"


def run(path, *args):
    out = StringIO()
    call_command("import_prices", str(path), *args, stdout=out)
    return out.getvalue()


def latest(model):
    return ModelPrice.objects.filter(model=model).order_by("-effective_from").first()


def rates(price):
    return (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok)


def test_it_imports_the_litellm_format():
    output = run(SAMPLE, "-v", "2")
    # gpt-4.1-mini, gpt-4.1-nano and deepseek-chat ship at these prices; the other two are new.
    assert "Added 2, changed 0, unchanged 3, skipped 3." in output
    assert rates(latest("openai/gpt-4.1-mini")) == (Decimal("0.4"), Decimal("1.6"), Decimal("0.1"))
    assert rates(latest("anthropic/claude-3-5-haiku-20241022")) == (Decimal("0.8"), Decimal("4"), Decimal("0.08"))
    assert rates(latest("mistral/mistral-small-latest")) == (Decimal("0.1"), Decimal("0.3"), None)
    assert "  added: anthropic/claude-3-5-haiku-20241022" in output
    assert "  skipped: text-embedding-3-small (mode 'embedding' is not chat)" in output
    assert "  skipped: dall-e-3" in output and "  skipped: whisper-1" in output
    assert "sample_spec" not in output
    assert not ModelPrice.objects.filter(model__contains="embedding").exists()


def test_it_keeps_a_key_with_a_provider_as_is():
    run(SAMPLE)
    assert ModelPrice.objects.filter(model="deepseek/deepseek-chat").count() == 3
    assert rates(latest("deepseek/deepseek-chat")) == (Decimal("0.28"), Decimal("0.42"), Decimal("0.028"))
    assert not ModelPrice.objects.filter(model="deepseek/deepseek/deepseek-chat").exists()


def test_it_adds_a_new_row_for_a_changed_price_and_keeps_history(tmp_path):
    old = ModelPrice.objects.get(model="openai/gpt-4.1-mini")
    changed = tmp_path / "prices.json"
    changed.write_text(SAMPLE.read_text().replace('"input_cost_per_token": 4e-07', '"input_cost_per_token": 5e-07'))
    output = run(changed, "-v", "2")
    assert "  changed: openai/gpt-4.1-mini" in output
    assert ModelPrice.objects.filter(model="openai/gpt-4.1-mini").count() == 2
    assert latest("openai/gpt-4.1-mini").input_per_mtok == Decimal("0.5")
    old_rates = rates(old)
    old.refresh_from_db()
    assert rates(old) == old_rates


def test_it_leaves_unchanged_prices_alone():
    run(SAMPLE)
    count = ModelPrice.objects.count()
    output = run(SAMPLE)
    assert "Added 0, changed 0, unchanged 5, skipped 3." in output
    assert ModelPrice.objects.count() == count


def test_it_converts_per_token_costs_exactly(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text('{"tiny": {"input_cost_per_token": 1.2345e-08, "output_cost_per_token": 3e-09, '
                    '"litellm_provider": "acme", "mode": "chat"},'
                    ' "finer": {"input_cost_per_token": 1.23456e-08, "output_cost_per_token": 3e-09, '
                    '"litellm_provider": "acme", "mode": "chat"}}')
    output = run(path, "-v", "2")
    assert rates(latest("acme/tiny")) == (Decimal("0.012345"), Decimal("0.003"), None)
    # The table keeps six places per million: a finer rate is stored rounded (half to even) and reported.
    assert rates(latest("acme/finer")) == (Decimal("0.012346"), Decimal("0.003"), None)
    assert "Rounded 1 rates to 6 decimal places" in output
    assert "  rounded: finer 0.0123456 -> 0.012346 $/Mtok" in output


def test_it_imports_a_csv(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text(
        "model,input_per_mtok,output_per_mtok,cached_input_per_mtok,effective_from\n"
        "acme/big,2.50,10,1.25,2025-03-01\n"
        "acme/small,0.1,0.2,,\n"
        "openai/gpt-4.1,2.00,8.00,0.50,2025-06-01\n"
    )
    output = run(path)
    assert "Added 2, changed 0, unchanged 1, skipped 0." in output
    big = latest("acme/big")
    assert rates(big) == (Decimal("2.5"), Decimal("10"), Decimal("1.25"))
    assert big.effective_from == datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert latest("acme/small").cached_input_per_mtok is None


def test_it_names_the_file_that_is_missing(tmp_path):
    with pytest.raises(CommandError, match="nope.json: no such file"):
        run(tmp_path / "nope.json")


def test_it_names_the_line_of_bad_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": {\n    "mode": chat\n  }\n}')
    with pytest.raises(CommandError, match=r"bad.json:3: not valid JSON"):
        run(path)


@pytest.mark.parametrize("line, message", [
    ("acme/x,abc,1,1", "input_per_mtok must be a number"),
    ("acme/x,1,1", "expected model,input_per_mtok"),
    ("nox,1,1,1", "model .nox. is not of the form provider/model"),
    ("acme/x,1,1,1,someday", "effective_from must be"),
])
def test_it_names_the_line_of_a_bad_csv_row(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"model,input_per_mtok,output_per_mtok,cached_input_per_mtok\nacme/ok,1,1,1\n{line}\n")
    with pytest.raises(CommandError, match=f"bad.csv:3: {message}"):
        run(path)
    assert not ModelPrice.objects.filter(model="acme/ok").exists()


COLLIDING = """{
  "gemini-exp-1206": {"input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06,
                      "litellm_provider": "gemini", "mode": "chat"},
  "gemini/gemini-exp-1206": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
                             "litellm_provider": "gemini", "mode": "chat"},
  "acme/twin": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1e-05,
                "litellm_provider": "acme", "mode": "chat"},
  "acme/twin-again": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                      "litellm_provider": "acme", "mode": "chat"},
  "twin": {"input_cost_per_token": 5e-06, "output_cost_per_token": 5e-06, "litellm_provider": "acme", "mode": "chat"},
  "claude-noisy": {"input_cost_per_token": 2.99999000000000020e-06, "output_cost_per_token": 1.5e-05,
                   "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06,
                   "litellm_provider": "anthropic", "mode": "chat"}
}"""


def snapshot():
    return sorted(ModelPrice.objects.values_list(
        "model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "effective_from",
    ))


def test_it_imports_a_file_with_colliding_keys_twice_and_changes_nothing_the_second_time(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(COLLIDING)
    first = run(path)
    assert "Added 4, changed 0, unchanged 0, skipped 0." in first
    # The key that spells the id wins over one the provider was prefixed to, wherever it is in the file.
    assert "Collision: gemini/gemini-exp-1206 is named by gemini/gemini-exp-1206 (used) and gemini-exp-1206" in first
    assert "Collision: acme/twin is named by acme/twin (used) and twin (ignored)." in first
    assert rates(latest("gemini/gemini-exp-1206")) == (Decimal("2"), Decimal("8"), None)
    assert rates(latest("acme/twin")) == (Decimal("3"), Decimal("10"), None)
    before = snapshot()
    second = run(path)
    assert "Added 0, changed 0, unchanged 4, skipped 0." in second
    assert snapshot() == before


def test_it_rounds_float_noise_and_reads_the_cache_write_rate(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(COLLIDING)
    output = run(path, "-v", "2")
    noisy = latest("anthropic/claude-noisy")
    assert (noisy.input_per_mtok, noisy.cached_input_per_mtok, noisy.cache_write_per_mtok) == (
        Decimal("2.99999"), Decimal("0.3"), Decimal("3.75"),
    )
    assert "  rounded: claude-noisy 2.9999900000000002 -> 2.99999 $/Mtok" in output


def test_it_imports_only_configured_or_priced_models(tmp_path, settings):
    settings.CHAT_MODELS = ["demo/assistant", "acme/twin"]
    path = tmp_path / "prices.json"
    path.write_text(COLLIDING.replace('"claude-noisy"', '"claude-3-5-haiku"'))
    output = run(path, "--only-configured", "-v", "2")
    # acme/twin is configured; anthropic/claude-3-5-haiku is priced already (a default row); the rest are left out.
    assert "Added 1, changed 1, unchanged 0, skipped 0." in output
    assert "Left out 2 models neither configured nor priced" in output
    assert "  added: acme/twin" in output and "  changed: anthropic/claude-3-5-haiku" in output
    assert not ModelPrice.objects.filter(model__startswith="gemini/gemini-exp").exists()


def test_it_changes_nothing_in_a_dry_run(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(COLLIDING)
    before = snapshot()
    output = run(path, "--dry-run")
    assert "Dry run, nothing saved: would have added 4, changed 0" in output
    assert snapshot() == before


def test_it_reads_a_csv_header_with_a_cache_write_column(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text(
        "model,input_per_mtok,output_per_mtok,cached_input_per_mtok,cache_write_per_mtok\n"
        "acme/cachey,3,15,0.3,3.75\n"
        "acme/plain,1,2,,\n"
    )
    assert "Added 2," in run(path)
    assert latest("acme/cachey").cache_write_per_mtok == Decimal("3.75")
    assert latest("acme/plain").cache_write_per_mtok is None
    with pytest.raises(CommandError, match="the header must be model,input_per_mtok"):
        path.write_text("model,input_per_mtok,output_per_mtok,cached_input_per_mtok,surprise\n")
        run(path)
