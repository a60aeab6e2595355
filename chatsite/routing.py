"""Channels' routers as plain callables: each returns the next application's awaitable instead of
awaiting it inside a coroutine of its own.

An open websocket's task lives as long as the socket, and every router or middleware written as
`async def __call__(...): return await inner(...)` keeps a suspended coroutine frame (220–380 B,
with its locals: the scope it was given among them) in that task's await chain for all that time.
A router that only chooses the next application can instead return that application's awaitable:
it does its work when the server calls the application, and then is gone from the chain
(docs/PERFORMANCE.md, "Memory per open stream").

The outermost router (`ProtocolTypeRouter`) also turns an exception raised while the chain is being
built into an awaitable that raises it, so the failure surfaces where it did when every link was a
coroutine: in the application's task (daphne logs it and closes the connection), not in the
server's code that calls the application (daphne would leave the handshake hanging).
"""

from asgiref.sync import markcoroutinefunction
from channels import routing
from django.urls.exceptions import Resolver404


async def _raise(exc):
    raise exc


def returns_awaitable(function):
    """Mark a plain function that returns an awaitable (an application, or an application's
    `__call__`) as a coroutine function, as servers tell an ASGI 3 application: asgiref (daphne,
    Channels' testing), uvicorn and others would otherwise take it for an ASGI 2 double callable."""
    function._asgi_single_callable = True
    return markcoroutinefunction(function)


class ProtocolTypeRouter(routing.ProtocolTypeRouter):
    """Channels' ProtocolTypeRouter: the application for the scope's type, by its awaitable."""

    @returns_awaitable
    def __call__(self, scope, receive, send):
        try:
            application = self.application_mapping.get(scope["type"])
            if application is None:
                raise ValueError("No application configured for scope type %r" % scope["type"])
            return application(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - raised again, in the application's task
            return _raise(exc)


class URLRouter(routing.URLRouter):
    """Channels' URLRouter (the same matching, the same scope keys), by the awaitable of the route's
    application. Errors (no route) are raised when it is called; `ProtocolTypeRouter` above, or a
    coroutine middleware between the two, moves them into the application's task."""

    @returns_awaitable
    def __call__(self, scope, receive, send):
        path = scope.get("path_remaining", scope.get("path", None))
        if path is None:
            raise ValueError("No 'path' key in connection scope, cannot route URLs")
        if "path_remaining" not in scope:
            # The outermost URLRouter: handle root_path if present.
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                raise ValueError("No route found for path %r." % path)
            path = path[len(root_path):]
        path = path.lstrip("/")  # as Django's resolver matches
        for route in self.routes:
            try:
                match = route.pattern.match(path)
                if match:
                    new_path, args, kwargs = match
                    kwargs.update(route.default_args)
                    outer = scope.get("url_route", {})
                    return route.callback(
                        dict(
                            scope,
                            path_remaining=new_path,
                            url_route={
                                "args": outer.get("args", ()) + args,
                                "kwargs": {**outer.get("kwargs", {}), **kwargs},
                            },
                        ),
                        receive,
                        send,
                    )
            except Resolver404:
                pass
        if "path_remaining" in scope:
            raise Resolver404("No route found for path %r." % path)
        raise ValueError("No route found for path %r." % path)
