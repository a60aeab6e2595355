from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out

        from chat import checks  # noqa: F401  (registers the system checks)
        from chatsite import randomness

        randomness.install()  # CSRF secrets from one os.urandom call, not one per character

        # No closing of a request's database connections at its end: chatsite.handler runs requests on
        # long-lived threads, each keeping its connection (CONN_MAX_AGE; PostgreSQL: psycopg's pool).
        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="chat.close_sockets_on_logout")


def close_sockets_on_logout(user=None, **kwargs):
    """Close the open sockets of a person who signed out, on every process (chat.signouts)."""
    from asgiref.sync import async_to_sync

    from chat import signouts

    if user is not None:
        async_to_sync(signouts.signed_out)(user.pk)
