"""Errors a user can fix: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A problem in the user's input or environment (bad file, missing feed, bad flag)."""
