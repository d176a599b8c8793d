"""User-facing errors. The CLI prints any of these as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (config, data, paths, state): the message names the problem."""


class DataError(UserError, ValueError):
    """A dataset file that is missing, empty, or of the wrong schema (names file, row, column)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete or corrupt."""


class NoJobError(UserError):
    """A command that needs a running job found none."""
