"""The event loop chatsite's servers run on: uvloop when it is importable, else asyncio's own."""

import asyncio
import logging

log = logging.getLogger(__name__)


def install_loop_policy():
    """Make new event loops uvloop loops; return the policy's name (asyncio when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        log.info("uvloop is not installed: serving on asyncio's event loop")
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
