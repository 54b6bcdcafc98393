r"""Trains GenGait: prepares the TFDS dataset if needed, then trains (resuming) in --workdir.

  python -m launch.train --config=gengait_jax/configs/default.py:demo --workdir=runs/demo
  python -m launch.train --config=gengait_jax/configs/default.py:tiny --workdir=/tmp/t \
      --config.total_steps=50

Ctrl-C saves a checkpoint and exits (status 130); the same command resumes from it.
"""

import logging as py_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "gengait_jax/configs/default.py:demo", "Preset file:name.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://).",
                               required=True)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU slices; "
    "elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
_VERBOSE_LIBS = flags.DEFINE_bool("verbose_libs", False, "Keep orbax/grain INFO logs.")


class _QuietLibs(py_logging.Filter):
    """Drops INFO records of checkpoint/data libraries (they log every save)."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = any(s in record.pathname for s in ("/orbax/", "/grain/", "/tensorstore/"))
        return record.levelno >= py_logging.WARNING or not noisy


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; a bad flag or config ends in one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001  (flags.Error, config file errors, bad overrides)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        msg = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
        if isinstance(e, (AttributeError, KeyError)):  # --config.no_such_field=...
            msg = f"unknown config field {msg}"
        print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
        sys.exit(2)


def main(argv) -> None:
    """Prepares data, trains, prints the final metrics; bad inputs end in one line."""
    del argv
    import jax
    if _DISTRIBUTED.value:  # TPU VM, SLURM, Open MPI detect themselves; else env variables
        env = lambda k: int(os.environ[k]) if os.environ.get(k) else None
        jax.distributed.initialize(  # (jax itself reads JAX_COORDINATOR_ADDRESS)
            num_processes=env("JAX_NUM_PROCESSES"), process_id=env("JAX_PROCESS_ID"))
    if not _VERBOSE_LIBS.value:
        logging.get_absl_handler().addFilter(_QuietLibs())
    from gengait_jax import train
    cfg = _CONFIG.value
    try:
        train.prepare_data(cfg)
        final = train.train_and_evaluate(cfg, _WORKDIR.value)
    except KeyboardInterrupt as e:
        print(f"stopped: {e or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError, OSError) as e:
        logging.vlog(1, "traceback", exc_info=True)  # --verbosity=1 shows it
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    logging.info("final: %s", {k: round(v, 5) if isinstance(v, float) else v
                               for k, v in final.items()})


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
