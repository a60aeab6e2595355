"""Serve chatsite with daphne on uvloop: `python -m chatsite.serve [daphne's arguments]`.

daphne makes its event loop when its server module is imported, so the loop policy has to be in
place before that import; this entry point installs it first, then runs daphne's own command line.
Without uvloop installed it is plain daphne on asyncio.
"""

import sys

from chatsite.loop import install_loop_policy


def main():
    """Install the loop policy, then run daphne's command line with this process's arguments."""
    install_loop_policy()
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    sys.exit(main())
