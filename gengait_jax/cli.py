"""What every launcher shares: a console a person reads, and bad input -> one line, exit 1.

`run(main)` is `absl.app.run` with: flag and config errors as one line (exit 2); library INFO
logging (orbax, grain, tensorstore, TFDS, etils, jax, gcsfs) and TFDS progress bars off unless
`--verbosity` is given; GaitDataError and the other expected errors printed as
`error: <message>` on ONE line with exit 1 (`--verbosity=1` logs the traceback); Ctrl-C exit 130.
"""

from __future__ import annotations

import logging as py_logging
import sys
import warnings
from typing import Callable

import tensorflow_datasets as tfds
from absl import app, flags, logging

from tfds_gait.errors import GaitDataError

EXPECTED = (GaitDataError, ValueError, FileNotFoundError, FloatingPointError, KeyError, OSError)
_NOISY = ("/orbax/", "/grain/", "/tensorstore/", "/tensorflow_datasets/", "/etils/", "/jax/",
          "/absl/", "/gcsfs/", "/fsspec/")


class _QuietLibraries(py_logging.Filter):
    """Drops records below WARNING that come from libraries (our own INFO lines stay)."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or not any(s in record.pathname
                                                                for s in _NOISY)


def quiet_libraries() -> None:
    """Library INFO logs and TFDS progress bars off (called unless --verbosity is set)."""
    logging.get_absl_handler().addFilter(_QuietLibraries())
    tfds.disable_progress_bar()
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def one_line(e: BaseException) -> str:
    """An exception as one line (GaitDataError already is 'path: problem')."""
    text = " ".join(str(e).split())
    if isinstance(e, (GaitDataError, ValueError, FloatingPointError)) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; a bad flag or config ends in one line (exit 2), not a traceback."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001  (flags.Error, config file errors, bad overrides)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        msg = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
        if isinstance(e, (AttributeError, KeyError)):  # --config.no_such_field=...
            msg = f"unknown config field {msg}"
        print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
        sys.exit(2)


def _help(module: str) -> None:
    """--help: the launcher's docstring and its own flags on stdout, exit 0 (absl would name the
    console-script wrapper's flags, none, and exit 1)."""
    doc = (sys.modules[module].__doc__ or "").strip()
    print(f"{doc}\n\nflags:\n{flags.FLAGS.module_help(module)}\n\n"
          "--verbosity=1 shows library logs and tracebacks; --helpfull lists every flag.")
    sys.exit(0)


def run(main: Callable[[], None]) -> None:
    """Runs `main()` as an absl app with the conventions of the module docstring."""
    if any(a in ("-h", "--help", "--helpshort", "-?") for a in sys.argv[1:]):
        _help(main.__module__)

    def wrapped(argv) -> None:
        del argv
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.INFO)
            quiet_libraries()
        try:
            main()
        except KeyboardInterrupt as e:
            print(f"stopped: {e or 'interrupted'}", file=sys.stderr)
            sys.exit(130)
        except EXPECTED as e:
            logging.vlog(1, "traceback", exc_info=True)
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)

    app.run(wrapped, flags_parser=_parse_flags)
