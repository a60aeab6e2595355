import asyncio
import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway import bench

ROWS = [("TTFT", "ttft_ms"), ("E2E latency", "e2e_ms"), ("ITL", "itl_ms"), ("TPOT", "tpot_ms")]


class Command(BaseCommand):
    help = ("Measure a model streamed and not, through the relay: time to first token, end-to-end and "
            "inter-token latency, time per output token (p50/p95/p99), output tokens/s and errors.")

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="a model of CHAT_MODELS")
        parser.add_argument("--requests", type=int, default=20, help="requests per mode (default 20)")
        parser.add_argument("--concurrency", type=int, default=4, help="requests at once (default 4)")
        parser.add_argument("--prompt", default="Write a short paragraph about rivers.", help="the user message")
        parser.add_argument("--max-tokens", type=int, default=256, help="max_tokens per reply (default 256)")
        parser.add_argument("--warmup", type=int, default=1, help="uncounted requests first (default 1)")
        parser.add_argument("--format", default="table", choices=("table", "json"))

    def handle(self, *args, model, requests, concurrency, prompt, max_tokens, warmup, format, **options):
        if model not in settings.CHAT_MODELS:
            raise CommandError(f"{model!r} is not in CHAT_MODELS: one of {', '.join(settings.CHAT_MODELS)}.")
        if requests < 1 or concurrency < 1 or max_tokens < 1 or warmup < 0:
            raise CommandError("--requests, --concurrency and --max-tokens must be at least 1, --warmup at least 0.")
        if not prompt.strip():
            raise CommandError("--prompt must not be empty.")
        report = asyncio.run(bench.run(model, prompt, requests, concurrency, max_tokens, warmup))
        if format == "json":
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.write_table(report)

    def write_table(self, report):
        """Write the two modes side by side, then the gain of streaming in words."""
        modes = report["modes"]
        self.stdout.write(f"{report['model']}: {report['requests']} requests a mode, concurrency "
                          f"{report['concurrency']}, prompt {report['prompt_chars']} chars, max_tokens "
                          f"{report['max_tokens']}")
        header = ["", "streaming p50", "p95", "p99", "non-streaming p50", "p95", "p99"]
        lines = [header]
        for label, key in ROWS:
            cells = [f"{label} (ms)"]
            for mode in bench.MODES:
                figures = modes[mode][key]
                cells += [f"{figures[f'p{p}']:,.1f}" if figures else "-" for p in bench.PERCENTILES]
            lines.append(cells)
        for label, key in [("output tokens/s", "output_tokens_per_s"), ("output tokens", "output_tokens"),
                           ("errors", "errors")]:
            lines.append([label, str(modes["streaming"][key]), "", "", str(modes["non_streaming"][key]), "", ""])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
            self.stdout.write("  ".join(cells).rstrip())
        for mode in bench.MODES:
            for example in modes[mode]["error_examples"]:
                self.stdout.write(f"{mode} error: {example}")
        self.stdout.write(bench.sentence(report))
