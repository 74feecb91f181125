"""Errors caused by the user's input (config, data, workdir).

`main.py` turns a `UserError` into one line `error: <message>` on stderr and exit code 2;
every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad config value, missing or malformed data, unusable workdir: the user can fix it."""


class Stopped(Exception):
  """The run was asked to stop (SIGINT/SIGTERM) and saved a checkpoint first."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum
