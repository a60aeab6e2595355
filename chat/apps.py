from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self):
        from django.core.signals import request_finished

        from chat import checks  # noqa: F401  (registers the system checks)

        request_finished.connect(close_request_connections, dispatch_uid="chat.close_request_connections")


def close_request_connections(**kwargs):
    """Close the database connections a finished HTTP request opened.

    Under ASGI every request's sync code runs in a thread of its own, so a persistent connection
    could never be reused: it would stay open until garbage collection. Connections inside a
    transaction (the test client's) are left alone.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
