"""The project's mock upstream (the chat.mock_upstream package), plus the time of every token write in /mock/stats.

`MockUpstream.sent()` runs right after each write to the client socket; this subclass also keeps
(time.time(), tokens) per write, so the bench can tell each token's delay from the moment the
upstream wrote it, not from a schedule that drifts as the mock's timers run late. The cost is
one clock read and one list append per write, in the mock, not in the relay.
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.mock_upstream import MockUpstream  # noqa: E402


class TimedMock(MockUpstream):
    """A MockUpstream that remembers when it wrote each token."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = {}  # record id -> [(time.time(), tokens)]

    def sent(self, record, count):
        """See MockUpstream.sent(); also note the time of this write."""
        now = time.time()
        super().sent(record, count)
        self.writes.setdefault(record.id, []).append((now, count))

    def reset(self):
        """See MockUpstream.reset()."""
        super().reset()
        self.writes.clear()

    def stats(self, log=True):
        """See MockUpstream.stats(); each log record also has `writes`."""
        snapshot = super().stats(log)
        for record in snapshot.get("log", ()):
            record["writes"] = self.writes.get(record["id"], [])
        return snapshot


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--ttft-ms", type=float, default=50)
    parser.add_argument("--gap-ms", type=float, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--log-size", type=int, default=50_000, help="requests kept in the log")
    parser.add_argument("--no-write-times", action="store_true",
                        help="serve the plain mock: no time per write (a long soak would hold millions)")
    args = parser.parse_args()
    kind = MockUpstream if args.no_write_times else TimedMock
    mock = kind(ttft_ms=args.ttft_ms, gap_ms=args.gap_ms, tokens=args.tokens, log_size=args.log_size)
    asyncio.run(mock.serve("127.0.0.1", args.port))


if __name__ == "__main__":
    main()
