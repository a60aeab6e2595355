"""A batch job's progress line on stderr: done, failed, tokens, cost, rate and time left."""

import sys
import time
from decimal import Decimal

REDRAW_S = 0.2  # on a terminal
LOG_EVERY_S = 5.0  # to a file or pipe: a plain line now and then


class Progress:
    """Counts a job's lines, tokens and cost, and draws them on a stream."""

    def __init__(self, total, stream=None, skipped=0):
        self.total, self.skipped = total, skipped
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = self.failed = self.retries = self.tokens = 0
        self.cost = Decimal(0)
        self.started = self.drawn = time.monotonic()

    def spent(self, record):
        """Count one upstream request's tokens and cost (every attempt costs what it used)."""
        self.tokens += record.prompt_tokens + record.completion_tokens
        self.cost += record.cost_usd or 0

    def retrying(self):
        self.retries += 1

    def line_done(self, failed):
        """Count one finished line and redraw when due."""
        self.done += 1
        self.failed += failed
        now = time.monotonic()
        if now - self.drawn >= (REDRAW_S if self.tty else LOG_EVERY_S):
            self.drawn = now
            self.draw(now)

    def draw(self, now=None):
        """Write the progress line."""
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate and left else ("-" if left else "0s")
        width = 20
        filled = round(width * self.done / self.total) if self.total else width
        text = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} done, {self.failed} failed"
                f" | {self.tokens} tokens | ${self.cost:.6f} | {rate:.1f} lines/s | ETA {eta}")
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def finish(self):
        """Draw the last state (and end the terminal's line)."""
        self.draw()
        if self.tty:
            self.stream.write("\n")

    def summary(self, interrupted):
        """Return the closing lines for the job."""
        elapsed = time.monotonic() - self.started
        state = "Interrupted" if interrupted else "Finished"
        lines = [f"{state}: {self.done - self.failed} succeeded, {self.failed} failed, "
                 f"{self.total - self.done} not run (of {self.total}; {self.skipped} already done before this run)",
                 f"{self.tokens} tokens, ${self.cost:.10f}, {self.retries} retries, {elapsed:.1f}s"]
        if interrupted:
            lines.append("Run the same command again to resume: finished lines are skipped.")
        elif self.failed:
            lines.append("Rerun with --retry-errors to try the failed lines again.")
        return lines
