"""No pretty-printing for autobahn's debug log lines while that log is off.

autobahn's websocket protocol calls `pformat` on its ~30 settings as every connection opens, and on
the connection's transport details as its handshake starts, for `log.debug` lines that txaio drops
unless debug logging is on: ~0.17 ms of CPU per websocket handshake, ~10 % of one. `install`
replaces the module's `pformat` with one that formats only when that log would print the line;
`Timings.__str__`, its other caller, keeps the real one.
"""

import pprint
import sys

DEBUG_LEVELS = ("debug", "trace")
UNFORMATTED = "(not formatted: autobahn's debug log is off)"


def install():
    """Patch autobahn.websocket.protocol (once; a no-op without autobahn)."""
    try:
        from autobahn.websocket import protocol
    except ImportError:
        return
    if getattr(protocol.pformat, "lazy", False):
        return

    def pformat(obj, *args, **kwargs):
        # The caller is a protocol method: its txaio logger says whether the line would be printed
        # (a logger of unknown make, or none, gets the real thing).
        log = getattr(sys._getframe(1).f_locals.get("self"), "log", None)
        if log is None or getattr(log, "_log_level", "debug") in DEBUG_LEVELS:
            return pprint.pformat(obj, *args, **kwargs)
        return UNFORMATTED

    pformat.lazy = True
    protocol.pformat = pformat
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
