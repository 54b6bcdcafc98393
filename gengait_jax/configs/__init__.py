"""GenGait configs (config as code: `default.py` presets) and their validation, in one place."""

from __future__ import annotations

import os

import ml_collections

from tfds_gait.errors import GaitDataError

PRESETS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")
DEMO = f"{PRESETS_FILE}:demo"  # the launchers' default --config (works from any directory)

MODALITIES = ("angles", "positions")
WITHHOLD = ("joint", "phase")
CHANNEL_RULES = ("reliable", "all")
ATTENTION = ("auto", "einsum", "cudnn")
NUM_FRAMES = 100  # points per stride of every gait_cycles config


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the values that would otherwise fail deep inside training or inference;
    raises GaitDataError('config: <field> ...') on the first problem, returns cfg."""
    problems = []
    check = lambda ok, msg: ok or problems.append(msg)
    check(bool(cfg.data.name), "data.name is empty")
    check("://" not in str(cfg.data.data_dir),
          f"data.data_dir={cfg.data.data_dir}: TFDS cannot write array_record files to a "
          "bucket (array_record's writer opens local files only); use a local data_dir on "
          "every host (each host builds the same dataset; the workdir can be gs://)")
    check(cfg.data.get("modality", "angles") in MODALITIES,
          f"data.modality={cfg.data.get('modality')!r}; expected one of {MODALITIES}")
    check(cfg.model.patch >= 1 and NUM_FRAMES % cfg.model.patch == 0,
          f"model.patch={cfg.model.patch} does not divide the {NUM_FRAMES} points of a stride")
    for part in ("", "dec_"):
        width, heads = cfg.model[f"{part}width"], cfg.model[f"{part}heads"]
        check(heads >= 1 and width % heads == 0,
              f"model.{part}width={width} is not a multiple of model.{part}heads={heads}")
    check(cfg.model.get("attention", "auto") in ATTENTION,
          f"model.attention={cfg.model.get('attention')!r}; expected one of {ATTENTION}")
    check(cfg.batch_size >= 1 and cfg.eval_batch_size >= 1, "batch sizes must be >= 1")
    check(cfg.total_steps >= 1 and cfg.lr > 0, "total_steps and lr must be positive")
    check(0 <= cfg.warmup_steps < max(cfg.total_steps, 1) or cfg.total_steps == 1,
          f"warmup_steps={cfg.warmup_steps} is not below total_steps={cfg.total_steps}")
    check(0 < cfg.mask.ratio < 1, f"mask.ratio={cfg.mask.ratio} is not in (0, 1)")
    check(cfg.calibration.folds == 0 or cfg.calibration.folds >= 2,
          f"calibration.folds={cfg.calibration.folds}: 0 (no calibration) or >= 2")
    check(0 < cfg.calibration.alpha < 0.5, f"calibration.alpha={cfg.calibration.alpha} is "
                                            "not in (0, 0.5)")
    check(2 <= cfg.calibration.window <= NUM_FRAMES,
          f"calibration.window={cfg.calibration.window} is not in 2..{NUM_FRAMES}")
    check(cfg.calibration.get("channels", "reliable") in CHANNEL_RULES,
          f"calibration.channels={cfg.calibration.get('channels')!r}; expected one of "
          f"{CHANNEL_RULES}")
    check(cfg.twin.withhold in WITHHOLD, f"twin.withhold={cfg.twin.withhold!r}; expected one "
                                         f"of {WITHHOLD}")
    if problems:
        raise GaitDataError("config", "; ".join(problems))
    return cfg
