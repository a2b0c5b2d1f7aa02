"""One way for every CLI to refuse bad input: `error: <file/flag>: <what>` on one line.

    if __name__ == "__main__":
      define_flags()
      cli.run(main)          # instead of absl's app.run(main)

`UserError` (a ValueError) marks a refusal caused by the user's input (a flag, a file,
the data in it); its message starts with the flag or file at fault. `cli.run` runs an
absl `main`: a `UserError`, a flag-parsing error, an `app.UsageError`, an OS error that
names a file (missing, unreadable, disk full) and TensorFlow's not-found / permission /
data-loss errors print one line, `error: <message>`, on stderr and exit with status 2.
Anything else is a bug and keeps its traceback. `--verbose` shows the traceback of
refusals too. No TensorFlow import here (the converters' workers use this module).
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

EXIT_USER_ERROR = 2
# TensorFlow errors that describe the input, not the program (matched by class name so
# that this module does not import TensorFlow).
_TF_USER_ERRORS = ("NotFoundError", "PermissionDeniedError", "DataLossError",
                   "AlreadyExistsError")


class UserError(ValueError):
  """Bad input from the user; the message starts with the file or flag at fault."""


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def user_message(exc: BaseException) -> Optional[str]:
  """The one-line message of a refusal, or None when `exc` is a bug."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if isinstance(exc, (UserError, app.UsageError, flags.Error)):
    return _one_line(exc)
  if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
    return _one_line(f"{exc.filename}: {exc.strerror}")
  if (type(exc).__name__ in _TF_USER_ERRORS
      and type(exc).__module__.startswith("tensorflow")):
    message = getattr(exc, "message", str(exc)).strip().splitlines()
    return _one_line(message[0] if message else type(exc).__name__)
  return None


def parse_gin(gin_files, gin_bindings, **kwargs) -> None:
  """`gin.parse_config_files_and_bindings` with a missing file or a bad binding refused
  as a UserError naming --gin_file / --gin_bindings."""
  import gin  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  for path in gin_files:
    if not os.path.isfile(path):
      raise UserError(f"--gin_file={path}: no such file")
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings or []), **kwargs)
  except (ValueError, SyntaxError, TypeError, NameError, KeyError, ImportError) as e:
    text = str(e)
    where = [f for f in gin_files if f'"{f}"' in text]
    raise UserError(f"--gin_file={where[0]}: {text}" if where
                    else f"--gin_bindings: {text}") from e


def fail(message: str) -> None:
  """Prints `error: <message>` (one line) on stderr and exits with status 2."""
  sys.stderr.write(f"error: {_one_line(message)}\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    marker = " must have a value other than None."
    if marker in text:  # absl: "flag --x=None: Flag --x must have a value other than None."
      names = [part.split("Flag ")[-1] for part in text.split(marker)[:-1]]
      text = f"{', '.join(names)}: required flag not set"
    fail(text)


def call(fn: Callable, *args, verbose: bool = False):
  """fn(*args); a refusal (see `user_message`) prints one line and exits with status 2
  (unless `verbose`: then it propagates with its traceback). For any entry point."""
  try:
    return fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    message = user_message(e)
    if message is None or verbose:
      raise
  fail(message)


_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort")


def print_help(main: Callable) -> None:
  """The usage of the command whose `main` this is: its module's docstring and the flags
  that module defines (absl's own --help lists only flags of the `__main__` module,
  empty for console scripts and thin `python -m` entries)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  name = main.__module__
  module = sys.modules.get(name)
  doc = (module.__doc__ or "").strip() if module is not None else ""
  defined_in = sys.argv[0] if name == "__main__" else name  # absl's key for __main__
  print(f"{doc}\n\nflags (--helpfull: all):\n{flags.FLAGS.module_help(defined_in)}")


def run(main: Callable, argv=None) -> None:
  """absl's `app.run(main)` with one-line refusals (see the module docstring); --help
  prints the command's usage and flags (`print_help`) and exits with status 0."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Print the traceback of refused inputs too.")
  if any(arg in _HELP_FLAGS for arg in (sys.argv if argv is None else argv)[1:]):
    print_help(main)
    sys.exit(0)
  app.run(lambda args: call(main, args, verbose=flags.FLAGS.verbose), argv=argv,
          flags_parser=_parse_flags)
