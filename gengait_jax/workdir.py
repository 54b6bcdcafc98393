"""The workdir contract: every run file, in ONE place, on etils.epath (local or gs://).

  WORKDIR/config.json         resolved config of the model (train writes it)
  WORKDIR/model_meta.json     joint names, shapes, normalization stats, model id
  WORKDIR/checkpoints/<step>/ orbax: state (model + optimizer) and data (iterator positions)
  WORKDIR/metrics.jsonl, tb/  training metrics (host 0)
  WORKDIR/folds/<k>/          the K fold models of the out-of-fold calibration (workdirs too)
  WORKDIR/calibration.json    pass-1 calibration (id, model id, folds, thresholds)
  WORKDIR/oof.npz             out-of-fold pass-1 residuals the calibration was fitted on
  WORKDIR/evaluation/         launch.evaluate's outputs
Problems (missing workdir, file, unreadable JSON) raise GaitDataError ('<path>: <problem>').
"""

from __future__ import annotations

import io
import json
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from tfds_gait.errors import GaitDataError

CONFIG, META, CALIBRATION, METRICS = ("config.json", "model_meta.json", "calibration.json",
                                      "metrics.jsonl")
OOF = "oof.npz"


def jsonable(x: Any) -> Any:
    """Nested data with numpy values as Python ones and NaN / inf as None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def write_json(path: epath.Path | str, obj: Any) -> epath.Path:
    """Strict JSON (NaN -> null), indented; returns the path."""
    path = epath.Path(path)
    path.write_text(json.dumps(jsonable(obj), indent=1, allow_nan=False))
    return path


def write_npz(path: epath.Path | str, **arrays) -> epath.Path:
    """A compressed .npz written through a buffer (so it works on gs:// too); returns the path."""
    path, buf = epath.Path(path), io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def read_json(path: epath.Path | str, what: str) -> Any:
    """A JSON file, or GaitDataError naming it ('missing: not <what>' / 'not valid JSON')."""
    path = epath.Path(path)
    if not path.exists():
        raise GaitDataError(path, f"missing: {what}")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise GaitDataError(path, f"not valid JSON ({e})") from None


class Workdir:
    """One run's directory (a training run, or one fold model inside it)."""

    def __init__(self, path: str | epath.Path):
        text = str(path)
        self.path = epath.Path(text) if "://" in text else epath.Path(text).absolute()

    def __str__(self) -> str:
        return str(self.path)

    @property
    def remote(self) -> bool:
        """True for gs:// and other non-local paths."""
        return "://" in str(self.path)

    def file(self, name: str) -> epath.Path:
        """A path inside the workdir."""
        return self.path / name

    @property
    def checkpoints(self) -> epath.Path:
        return self.path / "checkpoints"

    def fold(self, k: int) -> "Workdir":
        """The workdir of fold model k."""
        return Workdir(self.path / "folds" / str(k))

    def require(self) -> None:
        """Raises GaitDataError when the workdir itself does not exist."""
        if not self.path.exists():
            raise GaitDataError(self.path, "no such workdir")

    def has_checkpoint(self) -> bool:
        """Whether any checkpoint step directory exists."""
        return self.checkpoints.exists() and any(
            p.name.isdigit() for p in self.checkpoints.iterdir())

    # --- run files
    def write_config(self, cfg: ml_collections.ConfigDict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.file(CONFIG).write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))

    def config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(read_json(self.file(CONFIG),
                                                   "not a trained GenGait workdir"))

    def write_meta(self, meta: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.file(META), meta)

    def meta(self) -> dict:
        return read_json(self.file(META), "not a trained GenGait workdir")

    def write_calibration(self, cal: dict) -> epath.Path:
        return write_json(self.file(CALIBRATION), cal)

    def calibration(self) -> dict:
        """The calibration; GaitDataError with the command to make it when missing."""
        path = self.file(CALIBRATION)
        if not path.exists():
            raise GaitDataError(path, f"missing: calibrate first (python -m launch.detect "
                                      f"--workdir={self.path} --calibrate)")
        cal = read_json(path, "a calibration")
        if not isinstance(cal, dict) or not {"id", "joint_names", "model_id"} <= set(cal):
            raise GaitDataError(path, "not a GenGait calibration (recalibrate: --calibrate)")
        fusion = cal.get("twin_fusion")
        if fusion is not None and not {"vm", "vc", "c", "mean_asym"} <= set(fusion):
            raise GaitDataError(path, "written by an older gengait-jax (twin_fusion without "
                                      "its moments): recalibrate (--calibrate)")
        return cal

    def write_arrays(self, name: str, **arrays) -> epath.Path:
        """An .npz in the workdir."""
        return write_npz(self.file(name), **arrays)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        path = self.file(name)
        if not path.exists():
            raise GaitDataError(path, "missing")
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    @property
    def metrics(self) -> epath.Path:
        return self.file(METRICS)
