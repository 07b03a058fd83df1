"""Errors that are the user's to fix, reported as one line without a traceback.

Library code raises these where the cause is outside the program (a bad config
value, a missing corpus, an unwritable directory). The CLIs catch them at the
top level, print the message and exit with the error's code, so a newcomer sees
what to change instead of a stack trace.
"""


class UserError(Exception):
  """A problem with the user's input; `str(error)` says what and how to fix it."""

  exit_code = 1


class ConfigError(UserError):
  """A config field is unknown or has a value that is not allowed."""

  exit_code = 2


class DataError(UserError):
  """The corpus or prepared data cannot be used (missing, empty, too small)."""


class Interrupted(UserError):
  """The run stopped on Ctrl-C, having saved what the same command continues from."""

  exit_code = 130  # 128 + SIGINT, what shells report for a job stopped by Ctrl-C
