"""The endpoint's refusals and failures, each with OpenAI's status, code and message."""

from chat.providers import UpstreamError

# Upstream statuses that are the caller's doing, passed on as they are; any other failure is a 502.
CLIENT_STATUSES = frozenset({400, 404, 413, 422})


class ApiError(Exception):
    """A request answered with an error: `status`, OpenAI's `code` and `param`, and `retry_after` seconds.

    Not a chat.protocol.ProtocolError: it is answered with an HTTP status and OpenAI's codes, in the
    bodies gateway/wire.py builds (as chat/protocol.py builds the socket's frames).
    """

    def __init__(self, status, message, code=None, param=None, retry_after=None):
        super().__init__(message)
        self.status, self.code, self.param, self.retry_after = status, code, param, retry_after


def from_upstream(error):
    """Return the ApiError that answers an UpstreamError (502, 504 for timeouts, 429 when rate limited)."""
    if error.code == "timeout":
        return ApiError(504, str(error), "upstream_timeout")
    if error.code == "rate_limited" or error.status == 429:
        return ApiError(429, str(error), "upstream_rate_limited", retry_after=max(1, round(error.retry_after or 1)))
    if error.status in CLIENT_STATUSES:
        return ApiError(error.status, str(error), "upstream_rejected")
    return ApiError(502, str(error), "upstream_error")


__all__ = ["ApiError", "UpstreamError", "from_upstream"]
