"""autobahn's per-connection debug lines are not pretty-printed while its debug log is off (chatsite.autobahn_log)."""

import pprint

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol

import chatsite.asgi  # noqa: F401 - installs it, as daphne loads the application
from chatsite import autobahn_log


def connection_made(level):
    """Run autobahn's per-connection setup with its logger at `level`; return the attributes it logged."""
    logged = []

    class Protocol(WebSocketServerProtocol):
        log = txaio.make_logger()

    Protocol.log._set_log_level(level)
    Protocol.log.debug = lambda fmt, **kw: logged.append(kw)
    connection = Protocol()
    connection.factory = WebSocketServerFactory()
    connection._connectionMade()
    return next(kw["attrs"] for kw in logged if "attrs" in kw)


def test_it_formats_nothing_while_the_debug_log_is_off():
    assert getattr(protocol.pformat, "lazy", False)
    assert connection_made("info") == autobahn_log.UNFORMATTED


def test_it_formats_as_before_when_the_debug_log_is_on():
    attrs = connection_made("debug")
    assert attrs.startswith("[(") and "'openHandshakeTimeout'" in attrs
    timings = protocol.Timings()
    timings.track("x")
    assert str(timings) == pprint.pformat(timings._timings)
