#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main():
    """Run administrative tasks; a bad setting is one line naming the variable, not a traceback."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from chatsite.loop import install_loop_policy

    install_loop_policy()  # before daphne's server module makes its loop (runserver imports it at setup)
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS
    except ImproperlyConfigured as exc:
        sys.exit(f"chatsite: {exc}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
