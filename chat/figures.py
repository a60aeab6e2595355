"""A reply's figures line (model, first token, tokens, speed, cost), and who may see its usage.

The page shows what this returns, from the stored records (chat/views.py) and from `done`
(chat/turns.py) alike, so each rule has one home.
"""

from django.conf import settings

MIN_STREAMING_MS = 100  # over less than this, a tokens-per-second figure says nothing
SHOW_USAGE = ("all", "staff", "none")


def shows_usage(user):
    """Return whether `user` may see token counts and cost (CHAT_SHOW_USAGE)."""
    mode = settings.CHAT_SHOW_USAGE
    if mode == "staff":
        return user is not None and user.is_authenticated and user.is_staff
    return mode == "all"


def cost_label(cost):
    """Return a cost in dollars with every significant digit (`$0.0000156`), or say it is unpriced."""
    if cost is None:
        return "not priced"
    digits = f"{cost:.10f}".rstrip("0")
    whole, _, fraction = digits.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def speed_label(completion_tokens, ttft_ms, duration_ms, streamed):
    """Return the output speed (`42.0 tok/s`), or "" where it means nothing.

    A reply that was not streamed arrives at once (its "speed" would be thousands of tokens a
    second); one or two tokens, or a burst shorter than MIN_STREAMING_MS, measure only noise.
    """
    streaming_ms = duration_ms - (ttft_ms or 0)
    if not streamed or completion_tokens < 2 or streaming_ms < MIN_STREAMING_MS:
        return ""
    return f"{completion_tokens * 1000 / streaming_ms:.1f} tok/s"


def figures(*, model, prompt_tokens, completion_tokens, estimated, cost_usd, ttft_ms, duration_ms, streamed,
            usage=True):
    """Return the figures line's labels by name; without `usage`, no tokens, speed or cost."""
    shown = {"model": model, "ttft": "" if ttft_ms is None else f"{ttft_ms} ms"}
    if usage:
        shown["tokens"] = f"{'≈' if estimated else ''}{prompt_tokens} in · {completion_tokens} out"
        shown["speed"] = speed_label(completion_tokens, ttft_ms, duration_ms, streamed)
        shown["cost"] = cost_label(cost_usd)
    return shown


def of_record(record, usage=True):
    """Return the figures of a stored reply's usage record."""
    return figures(
        model=record.model, prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
        estimated=record.estimated, cost_usd=record.cost_usd, ttft_ms=record.ttft_ms,
        duration_ms=record.duration_ms, streamed=record.streamed, usage=usage,
    )
