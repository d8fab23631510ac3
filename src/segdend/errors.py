"""The project's one error type.

Every problem a user can cause (bad data files, invalid configs, impossible values, missing
files, corrupted checkpoints) is raised as :class:`SegdendError` with a one-line message that
says what is wrong and how to fix it. The command line prints the message and exits with
code 2, without a traceback.
"""


class SegdendError(Exception):
    """A user-facing error with a one-line message (what is wrong, and the fix)."""

    exit_code = 2


class DivergenceError(SegdendError):
    """The simulation produced non-finite voltages or weights."""
