"""The demo model: an in-process simulator, so a fresh install chats without a network or a key.

It answers from a small set of useful replies (Markdown, lists, code), paced like a real model:
a time to first token, then a token every few milliseconds. It reports its usage as a real
upstream does, counting a token per word piece.
"""

import asyncio
import zlib

from django.conf import settings

from chat.providers import TOKEN, Usage

REPLIES = {
    "hello": (
        "Hello! I'm the **demo model** that ships with chatsite. I run inside the server, so you can "
        "try the page without an API key.\n\nAsk me about *streaming*, *billing*, *Django*, or *Python*, "
        "or point chatsite at a real provider by setting `CHAT_MODELS` and the provider's base URL and key."
    ),
    "stream": (
        "Streaming cuts the time you stare at a spinner. Instead of waiting for the whole reply, "
        "the server relays each token the moment the upstream produces it:\n\n"
        "1. Your browser sends the message over a websocket.\n"
        "2. The consumer opens one streaming request upstream (Server-Sent Events).\n"
        "3. Deltas are coalesced into a frame every ~30 ms and pushed to the page.\n"
        "4. When you press **Stop**, the upstream connection closes at once, so no tokens are paid "
        "for that nobody reads.\n\nThe number that matters is **time to first token**."
    ),
    "bill": (
        "Every upstream request leaves exactly one usage record:\n\n"
        "| field | example |\n|---|---|\n| prompt tokens | 412 |\n| completion tokens | 128 |\n"
        "| cost | $0.0003696 |\n| time to first token | 230 ms |\n\n"
        "Prices come from a table per model with an *effective from* date, so a later price change "
        "never rewrites history. Try `python manage.py usage_report --by model`."
    ),
    "django": (
        "Here is a minimal Django view that answers JSON:\n\n```python\nfrom django.http import JsonResponse\n\n\n"
        "def health(request):\n    \"\"\"Answer a load balancer's health check.\"\"\"\n"
        "    return JsonResponse({\"ok\": True})\n```\n\nWire it up in `urls.py` with "
        "`path(\"health/\", health)`. Keep views thin: look up, check ownership, call a model method, answer."
    ),
    "python": (
        "A small, idiomatic Python example: counting words with `collections.Counter`.\n\n```python\n"
        "from collections import Counter\n\n\ndef top_words(text, n=3):\n    \"\"\"Return the n most common words.\"\"\"\n"
        "    return Counter(text.lower().split()).most_common(n)\n\n\nprint(top_words(\"the cat and the hat\"))\n"
        "```\n\nIt prints `[('the', 2), ('cat', 1), ('and', 1)]`."
    ),
}
FALLBACK = (
    "Good question. I'm a demo model, so my knowledge is small, but here is how I'd approach it:\n\n"
    "- **Clarify** what outcome you want and how you'll know it worked.\n"
    "- **Break it down** into the smallest step you can check today.\n"
    "- **Measure** before and after, and keep the numbers.\n\n"
    "For real answers, configure a provider: `CHAT_MODELS=openai/gpt-4.1-mini` with `OPENAI_API_KEY`, "
    "or any OpenAI-compatible server with `<PREFIX>_BASE_URL`."
)


def reply_for(prompt):
    """Return the canned reply that best fits the prompt."""
    lowered = prompt.lower()
    for keyword, reply in REPLIES.items():
        if keyword in lowered:
            return reply
    if zlib.crc32(lowered.encode()) % 3 == 0:
        return REPLIES["stream"]
    return FALLBACK


class DemoProvider:
    async def stream(self, call):
        """Yield the reply a word at a time, paced by CHAT_DEMO_TTFT_MS and CHAT_DEMO_GAP_MS."""
        prompt = call.messages[-1]["content"] if call.messages else ""
        tokens = TOKEN.findall(reply_for(prompt))[: call.max_tokens]
        call.upstream_model = call.name
        call.opened = True
        call.usage = Usage(prompt_tokens=call.prompt_estimate())
        call.usage_partial = True
        await asyncio.sleep(settings.CHAT_DEMO_TTFT_MS / 1000)
        gap = settings.CHAT_DEMO_GAP_MS / 1000
        if not call.stream:
            await asyncio.sleep(gap * len(tokens))
            call.pieces = call.usage.completion_tokens = len(tokens)
            call.usage_partial = False
            call.finish_reason = "stop"
            yield "".join(tokens)
            return
        for i, token in enumerate(tokens):
            if i:
                await asyncio.sleep(gap)
            call.pieces += 1
            call.usage.completion_tokens += 1
            yield token
        call.usage_partial = False
        call.finish_reason = "stop" if len(tokens) < call.max_tokens else "length"
