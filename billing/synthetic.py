"""Realistic synthetic usage history, for demos and for measuring reports and the admin at scale."""

import bisect
import math
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing.models import AbandonmentEvent, ModelPrice, UsageRecord

BATCH = 2000
# Seeded records carry request ids whose first 32 bits are this mark: one index range finds them all.
SEED_MARK = 0x5EED5EED
SEED_IDS = (uuid.UUID(int=SEED_MARK << 96), uuid.UUID(int=((SEED_MARK + 1) << 96) - 1))
SEED_USER_PREFIX = "seed-user-"


def seeded():
    """Return the usage records seed_usage made."""
    return UsageRecord.objects.filter(request_id__range=SEED_IDS)


def real():
    """Return the usage records seed_usage did not make."""
    return UsageRecord.objects.exclude(request_id__range=SEED_IDS)


@transaction.atomic
def clear():
    """Delete every seeded record (their events go with them) and the seeded users; return how many records."""
    _, deleted = seeded().delete()
    get_user_model().objects.filter(username__startswith=SEED_USER_PREFIX, usage_records=None).delete()
    return deleted.get(UsageRecord._meta.label, 0)


@dataclass(frozen=True)
class Profile:
    """How one model behaves: its share of traffic, prompt and reply sizes, time to first token."""

    model: str
    weight: int
    prompt: int
    reply: int
    ttft_ms: int
    gap_ms: float
    upstream: str = ""


PROFILES = [
    Profile("openai/gpt-4.1-mini", 30, 900, 350, 450, 12, "gpt-4.1-mini-2025-04-14"),
    Profile("openai/gpt-4.1", 10, 1400, 500, 700, 20, "gpt-4.1-2025-04-14"),
    Profile("openai/gpt-4o-mini", 12, 800, 300, 400, 10, "gpt-4o-mini-2024-07-18"),
    Profile("anthropic/claude-sonnet-4-5", 12, 1600, 600, 1100, 25, "claude-sonnet-4-5-20250929"),
    Profile("anthropic/claude-haiku-4-5", 10, 1000, 400, 600, 12, "claude-haiku-4-5-20251001"),
    Profile("gemini/gemini-2.5-flash", 8, 1200, 450, 500, 8),
    Profile("deepseek/deepseek-chat", 8, 1100, 500, 900, 30),
    Profile("demo/assistant", 6, 60, 40, 350, 25),
    Profile("local/llama-3.1-8b", 4, 700, 300, 250, 15),  # no price: its records stay unpriced
]
STATUSES = [("completed", 900), ("stopped", 40), ("disconnected", 30), ("failed", 30)]
ERRORS = ["upstream returned 429: rate limited", "upstream returned 503", "first token timeout", "stream stalled"]


class Pricer:
    """Resolve prices like UsageRecord.record does, with one lookup per model and price epoch."""

    def __init__(self):
        self.instants = sorted(set(ModelPrice.objects.values_list("effective_from", flat=True)))
        self.cache = {}

    def cost(self, model, started, prompt, completion, cached):
        """Return (price, cost) for one request, as UsageRecord.record would price it."""
        key = (model, bisect.bisect_right(self.instants, started))
        if key not in self.cache:
            self.cache[key] = ModelPrice.objects.in_force(model, started)
        price = self.cache[key]
        if price is None:
            return None, None
        return price, price.cost(prompt, completion, cached)


class Seeder:
    """Generate `records` usage records spread over the last `days` days, reproducibly from `seed`."""

    def __init__(self, records, days=30, seed=0, users=60, sessions=400):
        self.records, self.days = records, days
        self.random = random.Random(seed)
        self.user_count, self.session_count = users, sessions
        self.now = timezone.now()

    def run(self):
        """Insert the records and their abandonment events in batches; return how many were made."""
        self.user_ids = self.make_users()
        self.sessions = [uuid.UUID(int=self.random.getrandbits(128)).hex for _ in range(self.session_count)]
        self.pricer = Pricer()
        made = 0
        while made < self.records:
            size = min(BATCH, self.records - made)
            self.insert([self.one() for _ in range(size)])
            made += size
        return made

    def make_users(self):
        """Create (or reuse) the seeded users; return their ids."""
        User = get_user_model()
        names = [f"{SEED_USER_PREFIX}{i:03d}" for i in range(self.user_count)]
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        User.objects.bulk_create([User(username=n) for n in names if n not in existing])
        return list(User.objects.filter(username__in=names).values_list("id", flat=True))

    @transaction.atomic
    def insert(self, pairs):
        """Save one batch of (record, abandonment) pairs."""
        records = UsageRecord.objects.bulk_create([record for record, _ in pairs], batch_size=500)
        events = []
        for record, abandonment in zip(records, (a for _, a in pairs)):
            if abandonment is not None:
                abandonment.record_id = record.pk
                events.append(abandonment)
        AbandonmentEvent.objects.bulk_create(events, batch_size=1000)
        # `created` is auto_now_add, so bulk_create stamped now: date each event when its person left.
        for event, record in zip(events, (r for r, a in pairs if a is not None)):
            event.created = record.started + timedelta(milliseconds=event.elapsed_ms)
        AbandonmentEvent.objects.bulk_update(events, ["created"], batch_size=1000)

    def one(self):
        """Return one unsaved (record, abandonment event or None) pair."""
        r = self.random
        profile = r.choices(PROFILES, weights=[p.weight for p in PROFILES])[0]
        status = r.choices([s for s, _ in STATUSES], weights=[w for _, w in STATUSES])[0]
        started = self.now - timedelta(seconds=r.random() * self.days * 86400)
        streamed = r.random() < 0.85
        prompt = max(5, int(r.lognormvariate(math.log(profile.prompt), 0.8)))
        cached = int(prompt * r.choice([0, 0, 0, 0.5, 0.8])) if prompt > 1024 else 0
        reply = max(1, int(r.lognormvariate(math.log(profile.reply), 0.7)))
        ttft = int(r.lognormvariate(math.log(profile.ttft_ms), 0.5))
        estimated, error, abandonment, retries = False, "", None, 0
        if status == "completed":
            duration = ttft + int(reply * profile.gap_ms)
            retries = 1 if r.random() < 0.02 else 0
        elif status == "failed":
            ttft, reply, cached, duration = None, 0, 0, int(r.uniform(50, 30_000))
            prompt = prompt if r.random() < 0.3 else 0
            error, retries = r.choice(ERRORS), r.randint(0, 2)
        else:
            before_first = r.random() < 0.3
            if before_first:
                ttft, reply, duration = None, 0, int(r.uniform(100, ttft))
            else:
                reply = max(1, int(reply * r.random()))
                duration = ttft + int(reply * profile.gap_ms)
            estimated = True
            abandonment = AbandonmentEvent(
                reason="stop" if status == "stopped" else "disconnect",
                phase="before_first_token" if before_first else "streaming",
                tokens_delivered=reply, elapsed_ms=duration,
            )
        price, cost = self.pricer.cost(profile.model, started, prompt, reply, cached)
        anonymous = r.random() < 0.35
        record = UsageRecord(
            request_id=uuid.UUID(int=(SEED_MARK << 96) | r.getrandbits(96), version=4),
            user_id=None if anonymous else r.choice(self.user_ids),
            visitor=r.choice(self.sessions)[:32] if anonymous else "",
            model=profile.model, upstream_model=profile.upstream, streamed=streamed, status=status,
            finish_reason={"completed": "stop", "failed": ""}.get(status, ""),
            prompt_tokens=prompt, completion_tokens=reply, cached_tokens=cached, estimated=estimated,
            price=price, cost_usd=cost, ttft_ms=ttft, duration_ms=duration, retries=retries, error=error,
            started=started, finished=started + timedelta(milliseconds=duration),
        )
        return record, abandonment
