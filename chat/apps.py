from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out
        from django.core.signals import request_finished

        from chat import checks  # noqa: F401  (registers the system checks)

        request_finished.connect(close_request_connections, dispatch_uid="chat.close_request_connections")
        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="chat.close_sockets_on_logout")


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


def close_sockets_on_logout(user=None, **kwargs):
    """Close the open sockets of a person who signed out, on every process (chat.signouts)."""
    from asgiref.sync import async_to_sync

    from chat import signouts

    if user is not None:
        async_to_sync(signouts.signed_out)(user.pk)
