"""Run the mock OpenAI- and Anthropic-compatible upstream (for tests, demos and benchmarks)."""

import asyncio

from django.core.management.base import BaseCommand, CommandError

from chat.mock_upstream import MockUpstream


class Command(BaseCommand):
    help = (
        "Serve a mock upstream: POST /v1/chat/completions (OpenAI), POST /v1/messages (Anthropic), "
        "GET /v1/models, GET /mock/stats, POST /mock/reset. Per-request options ride in the model "
        "name: gpt-4.1-mini+ttft=200+gap=5+tokens=30+fault=stall_mid."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8001, help="port to listen on (0: any free port)")
        parser.add_argument("--host", default="127.0.0.1",
                            help="address to listen on (default 127.0.0.1: this machine only)")
        parser.add_argument("--ttft-ms", type=float, default=50, help="time to first token, milliseconds")
        parser.add_argument("--gap-ms", type=float, default=10, help="gap between tokens, milliseconds")
        parser.add_argument("--tokens", type=int, default=40, help="tokens per generated reply")
        parser.add_argument("--prompt-cached", type=int, default=0, help="cached prompt tokens to report")

    def handle(self, *args, **options):
        mock = MockUpstream(
            ttft_ms=options["ttft_ms"], gap_ms=options["gap_ms"], tokens=options["tokens"],
            cached=options["prompt_cached"],
        )
        try:
            asyncio.run(mock.serve(options["host"], options["port"], ready=self.announce))
        except OSError as exc:
            raise CommandError(f"Cannot listen on {options['host']}:{options['port']}: {exc.strerror or exc}") from exc
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")

    def announce(self, base_url):
        """Tell the operator where the mock listens."""
        self.stdout.write(f"Mock upstream listening on {base_url} (OpenAI base URL: {base_url}/v1)", ending="\n")
        self.stdout.flush()
