import asyncio
import signal
import sys
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from gateway import batch
from gateway.progress import Progress

INTERRUPTED = 130  # what a shell reports for a process ended by Ctrl-C


class Command(BaseCommand):
    help = ("Run an OpenAI batch input file (JSONL: custom_id, method, url, body) through the relay, appending "
            "OpenAI batch output lines; rerun with the same --output to resume.")

    def add_arguments(self, parser):
        parser.add_argument("input", help="the batch input file (.jsonl)")
        parser.add_argument("--output", required=True, help="the output file (.jsonl); appended to, and resumed from")
        parser.add_argument("--concurrency", type=int, default=4, help="requests at once (default 4)")
        parser.add_argument("--model", help="the model for every line, instead of each body's")
        parser.add_argument("--retries", type=int, default=3, help="retries of a failed line (default 3)")
        parser.add_argument("--retry-errors", action="store_true", help="run again the lines that failed before")
        parser.add_argument("--max-cost", help="USD: refuse to start if the remaining lines could cost more")

    def handle(self, *args, input, output, concurrency, model, retries, retry_errors, max_cost, **options):
        if concurrency < 1 or retries < 0:
            raise CommandError("--concurrency must be at least 1 and --retries at least 0.")
        try:
            lines = batch.read_input(input, model)
            done = batch.finished(output, retry_errors)
            todo = [line for line in lines if line.custom_id not in done]
            if max_cost is not None:
                self.preflight(todo, max_cost)
        except batch.BatchError as exc:
            raise CommandError(str(exc)) from None
        # The raw stream: the progress line redraws itself with \r on a terminal.
        progress = Progress(len(todo), self.stderr._out, skipped=len(lines) - len(todo))
        job = batch.Job(todo, output, concurrency, retries, progress)
        if todo:
            asyncio.run(self.run(job))
        for line in progress.summary(job.interrupted):
            self.stdout.write(line)
        if job.interrupted:
            sys.exit(INTERRUPTED)

    async def run(self, job):
        """Run the job, turning Ctrl-C (SIGINT) into a clean stop that keeps every finished line."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, job.interrupt)
        try:
            await job.run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def preflight(self, todo, max_cost):
        """Refuse a job whose worst case passes --max-cost."""
        try:
            limit = Decimal(max_cost)
        except InvalidOperation:
            raise CommandError(f"--max-cost must be an amount in USD, like 5 or 0.25, not {max_cost!r}.") from None
        worst = batch.worst_case(todo)
        if worst > limit:
            raise CommandError(f"The {len(todo)} lines to run could cost up to ${worst:.6f} (every prompt byte a "
                               f"token, every reply max_tokens long), over --max-cost ${limit}. Raise --max-cost, "
                               f"lower max_tokens, or split the file.")
        self.stderr.write(f"Worst case ${worst:.6f} of --max-cost ${limit}: starting.")
