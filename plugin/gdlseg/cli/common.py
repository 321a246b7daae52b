"""What every ``gdlseg`` subcommand shares: the exit codes and the error that means "usage error"."""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some cases failed (the others were written), or the command could not complete
EXIT_USAGE = 2  # argparse's convention: a wrong or missing argument


class UsageError(Exception):
    """A wrong argument found after parsing (a missing file, an inconsistent option): exit code 2."""
