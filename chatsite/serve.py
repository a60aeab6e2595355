"""Serve chatsite with daphne on uvloop: `python -m chatsite.serve [daphne's arguments]`.

daphne makes its event loop when its server module is imported, so the loop policy has to be in
place before that import; this entry point installs it first, then runs daphne's own command line
with chatsite.lean_daphne's server (less state kept per open websocket). Without uvloop installed it
is daphne on asyncio.

Once the application is imported (Django set up, the URL conf, middleware and models loaded), the
garbage collector is tuned for a server whose one event loop carries every stream (docs/PERFORMANCE.md,
"Pauses of the garbage collector"): what start-up built is moved out of the collector's reach
(`gc.freeze`), so the full collections no longer walk it, and the youngest generation is collected
every GC_THRESHOLD allocations instead of every 700, so the loop stops less often.
"""

import gc
import sys

from chatsite.loop import install_loop_policy

# Python's defaults are (700, 10, 10). Each young collection costs in proportion to what it finds, so
# a larger first threshold means the same work in fewer, slightly longer stops; the full collection,
# the long stop, comes 10 × 10 young ones later, so it too comes GC_THRESHOLD / 700 times less often.
GC_THRESHOLD = (10_000, 10, 10)


def tune_gc():
    """Freeze what exists now (start-up's objects) and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def main():
    """Install the loop policy, then run daphne's command line with this process's arguments."""
    install_loop_policy()
    from chatsite.lean_daphne import LeanCommandLineInterface

    class Command(LeanCommandLineInterface):
        def load_asgi_app(self, asgi_app_path):
            application = super().load_asgi_app(asgi_app_path)
            tune_gc()
            return application

    Command.entrypoint()


if __name__ == "__main__":
    sys.exit(main())
