"""The error a person running Switchboard can fix themselves: the command line prints it as one line."""

from __future__ import annotations


class SwitchboardError(Exception):
    """A mistake in how Switchboard is set up or called (a setting, a file, a name, a part not running).

    Its message says what is wrong and what to do, and never holds a secret: the command line prints it
    as it is, without a traceback."""
