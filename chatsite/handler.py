"""Django's ASGI handler with the request's sync work in one thread hand-off, and static files before it.

Django's own ASGIHandler loads the middleware in async mode, so each MiddlewareMixin (security,
sessions, common, CSRF, auth, messages, X-Frame-Options) runs its process_request and its
process_response in a thread hand-off of their own, the sync view one more, the request_started
and request_finished signals one each: ~16 hand-offs a request, on a thread started for that
request alone (asgiref's ThreadSensitiveContext). Here the chain is loaded in sync mode and a
request's signals, middleware and view run in one call on a long-lived worker thread: a page GET
and the session POST cost half the CPU (bench/conversation.py, docs/PERFORMANCE.md).

Static files are served before that thread, on the event loop, by ServeStatic (hashed names,
far-future caching, precompressed variants), with SecurityMiddleware's headers, as when it sat
second in MIDDLEWARE; ServeStatic is async-only, which is what kept the whole chain async.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import response_for_exception
from django.core.exceptions import RequestAborted
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from django.utils.log import log_response
from servestatic.middleware import ServeStaticMiddleware


async def _not_static(request):
    return None


def forget(request, tasks):
    """Once a request is answered and closed, break the cycles it sits in, so that its objects are
    freed at once rather than left for the garbage collector, whose pauses stall every stream on the
    event loop (docs/PERFORMANCE.md, "Cyclic garbage"). Django's request is in several
    (the lazy `request.user`'s closure, the messages storage, the sessions' and CSRF's attributes), and
    the handler's frame in another (the cancelled listener's traceback holds it, and it holds the
    tasks): ~70 objects a request, two requests a conversation (the page and the session POST)."""
    tasks.clear()
    request.__dict__.clear()


class Handler(ASGIHandler):
    """Serve one HTTP request: a static file on the event loop, anything else in one worker-thread call."""

    def __init__(self, threads=None):
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        # Requests run at most this many at once (a view waiting on the database holds its thread);
        # each thread keeps its own database connection, as Django's persistent connections expect.
        self.executor = ThreadPoolExecutor(max_workers=threads or settings.HTTP_THREADS,
                                           thread_name_prefix="http")
        self.respond_in_thread = sync_to_async(self.respond, thread_sensitive=False, executor=self.executor)
        self.close_in_thread = sync_to_async(self.close, thread_sensitive=False, executor=self.executor)
        self.static = ServeStaticMiddleware(_not_static)
        self.static_prefix = self.static.static_prefix
        self.security = SecurityMiddleware(lambda request: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """Django 5.2's ASGIHandler.handle, with the signals, middleware and view in one thread call."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await self.close_in_thread(error_response)
            return

        async def process_request(request, send):
            response = await self.serve(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client left during the response
            return response

        # As Django does: a disconnect while the response is made or sent cancels it.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        try:
            await self.finish_tasks(tasks)
        finally:
            body_file.close()
            forget(request, tasks)

    async def finish_tasks(self, tasks):
        """Wait for the response (or the client's leaving), cancel the other task, close the response."""
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass  # the client left
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass  # cancelled, as asked
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await self.close_in_thread(None)
        else:
            if not getattr(response, "closed_in_thread", False):
                await self.close_in_thread(response)

    async def serve(self, request):
        """Return the response: the static file if the path names one, else the Django chain's."""
        response = None
        if request.path_info.startswith(self.static_prefix):
            response = await self.serve_static(request)
        if response is None:
            response = await self.respond_in_thread(request)
        response._handler_class = self.__class__
        return response

    async def serve_static(self, request):
        """Return ServeStatic's response for a static file with SecurityMiddleware's headers, or None."""
        try:
            response = self.security.process_request(request) or await self.static(request)
        except Exception as exc:  # ServeStatic's own "no such file" page under DEBUG, as the chain shows it
            response = await sync_to_async(response_for_exception, thread_sensitive=False,
                                           executor=self.executor)(request, exc)
        if response is None:
            return None
        response = self.security.process_response(request, response)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    def respond(self, request):
        """In a worker thread: request_started, the middleware and view, and for a whole (not streamed)
        response its close and request_finished, so the thread's database connection is checked and
        released in the same call that used it."""
        signals.request_started.send(sender=self.__class__, scope=request.scope)
        response = self.get_response(request)
        if not response.streaming:
            response.close()
            response.closed_in_thread = True
        return response

    def close(self, response):
        """In a worker thread: close a streamed response (request_finished), or signal a cancelled one."""
        if response is None:
            signals.request_finished.send(sender=self.__class__)
        else:
            response.close()

