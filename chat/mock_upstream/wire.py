"""Encode what goes on the wire: response heads, chunks, error bodies and pre-encoded stream events."""

import json
import time

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}
ERROR_TYPES = {
    "openai": {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               429: "requests"},
    "anthropic": {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                  413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"},
}
END = b"0\r\n\r\n"
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Transfer-Encoding", "chunked"),
               ("Cache-Control", "no-cache")]


def error_body(api, status, message):
    """Return an error response body in the protocol's shape."""
    kind = ERROR_TYPES[api].get(status, "server_error" if api == "openai" else "api_error")
    if api == "openai":
        code = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"type": "error", "error": {"type": kind, "message": message}}


def response_head(status, headers, keep_alive):
    """Return the status line and headers of a response, encoded."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"] + [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data):
    """Return `data` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class OpenAIEvents:
    """The chat.completion.chunk events of one reply, pre-encoded."""

    def __init__(self, plan, rid):
        self.plan = plan
        model = json.dumps(plan.model).encode()
        self.head = (b'data: {"id":"chatcmpl-mock%d","object":"chat.completion.chunk","created":%d,"model":%b,'
                     b'"system_fingerprint":"fp_mock","choices":[' % (rid, time.time(), model))
        self.token_prefix = self.head + b'{"index":0,"delta":{"content":'

    def preamble(self):
        return self.head + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},' \
                           b'"logprobs":null,"finish_reason":null}],"usage":null}\n\n'

    def token(self, text_json):
        return self.token_prefix + text_json + b'},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'

    def tail(self, sent):
        plan, out = self.plan, b""
        if plan.fault != "no_finish":  # no_finish: a clean end of stream that never says the reply is over
            out = self.head + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}],"usage":null}\n\n' % (
                plan.finish_reason.encode())
        if plan.include_usage and plan.fault != "no_usage":
            out += self.head + b'],"usage":' + json.dumps(plan.usage(sent)).encode() + b"}\n\n"
        return out if plan.fault in ("no_done", "no_finish") else out + b"data: [DONE]\n\n"

    def error(self, rate_limit=False):
        if rate_limit:
            return b'data: {"error": {"message": "Rate limit reached for requests.", ' \
                   b'"type": "requests", "param": null, "code": "rate_limit_exceeded"}}\n\n'
        return b'data: {"error": {"message": "The server had an error while processing your request.", ' \
               b'"type": "server_error", "param": null, "code": null}}\n\n'


class AnthropicEvents:
    """The Messages API stream events of one reply, pre-encoded."""

    token_prefix = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":')

    def __init__(self, plan, rid):
        self.plan, self.rid = plan, rid

    def preamble(self):
        usage = self.plan.usage(1)  # output_tokens 1 is Anthropic's placeholder; message_delta has the count
        start = {"type": "message_start", "message": {
            "id": f"msg_mock{self.rid}", "type": "message", "role": "assistant", "model": self.plan.model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}
        return (b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
                b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\n'
                b'event: ping\ndata: {"type": "ping"}\n\n')

    def token(self, text_json):
        return self.token_prefix + text_json + b"}}\n\n"

    def tail(self, sent):
        plan = self.plan
        usage = b""
        if plan.fault == "null_usage":
            usage = b',"usage":{"output_tokens":null}'
        elif plan.fault != "no_usage":
            usage = b',"usage":{"output_tokens":%d}' % sent
        # no_finish: a clean end of stream that never says the reply is over
        stop = b"null" if plan.fault == "no_finish" else b'"%b"' % plan.finish_reason.encode()
        out = (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
               b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":%b,'
               b'"stop_sequence":null}%b}\n\n' % (stop, usage))
        if plan.fault in ("no_done", "no_finish"):
            return out
        return out + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

    def error(self, rate_limit=False):
        if rate_limit:
            return (b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error",'
                    b'"message":"Number of request tokens has exceeded your per-minute rate limit"}}\n\n')
        return b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
