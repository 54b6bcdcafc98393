"""The detect pipeline behind `launch/detect.py`: checked inputs, both passes, the outputs.

Inputs are a Plug-in-Gait `.c3d` trial (segmented into strides by tfds_gait) or an `.npz` with
`angles` [N, T, J, C] (or one stride [T, J, C]) and optional `valid` [N, T, J], `side` [N] and
`joint_names` [J]. Every problem with the input or the workdir raises `InputError`, whose text
is ONE line naming the file and the problem; the launcher prints it and exits non-zero.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import numpy as np

from tfds_gait import joints as joints_lib

MIN_POINTS = 20       # fewer points per stride than this: not a time-normalized stride
RADIAN_MAX_ABS = 3.5  # angles whose largest |value| is below this (~pi) look like radians
SCALE_RATIO = 0.1     # input spread < 0.1x (or > 10x) the training spread: wrong units


class InputError(ValueError):
    """A bad input file or workdir: `path: problem` on one line."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")


@dataclasses.dataclass
class Strides:
    """Checked strides in the checkpoint's joint order and length."""

    angles: np.ndarray           # [N, T, J, C] float32, NaN where invalid
    valid: np.ndarray            # [N, T, J] bool
    side: np.ndarray | None      # [N] 'L'/'R' or None
    notes: list[str]             # what was fixed on the way (resampling, dropped strides)


def read_json(path: str) -> dict:
    """A JSON file of the workdir, or InputError."""
    if not os.path.exists(path):
        raise InputError(path, "missing: not a trained GenGait workdir")
    with open(path) as f:
        return json.load(f)


def resample(x: np.ndarray, t_out: int) -> np.ndarray:
    """Linear resampling of axis 1 onto t_out points of the same (end-exclusive) cycle."""
    t_in = x.shape[1]
    src = np.arange(t_out) * t_in / t_out
    lo = np.minimum(np.floor(src).astype(int), t_in - 1)
    hi, w = np.minimum(lo + 1, t_in - 1), (src - np.floor(src)).reshape(
        (1, -1) + (1,) * (x.ndim - 2))
    return (1 - w) * x[:, lo] + w * x[:, hi]


def _fit_length(path: str, x: np.ndarray, valid: np.ndarray, t: int, notes: list):
    """Same T as the checkpoint: T+1 points (0-100 % inclusive) drop the last, else resample."""
    t_in = x.shape[1]
    if t_in == t:
        return x, valid
    if t_in < MIN_POINTS:
        raise InputError(path, f"strides have {t_in} points, too short: expected {t} "
                               f"time-normalized points per stride")
    if t_in == t + 1:
        notes.append(f"{t + 1} points per stride (0-100 % inclusive): dropped the last")
        return x[:, :t], valid[:, :t]
    notes.append(f"resampled strides from {t_in} to {t} points (linear)")
    v = resample(valid.astype(float), t) > 0.999  # a frame near an invalid one is invalid
    return resample(np.nan_to_num(x), t), v


def _reorder(path: str, x, valid, names, meta: dict):
    """Puts the joints in the checkpoint's order (by name when the file names them)."""
    want = list(meta["joint_names"])
    if names is None:
        if x.shape[2] != len(want):
            raise InputError(path, f"{x.shape[2]} joints, but the model expects {len(want)} "
                                   f"({', '.join(want)})")
        return x, valid
    names = [str(n) for n in np.asarray(names).tolist()]
    missing = [n for n in want if n not in names]
    if missing:
        known = {k: v for k, v in joints_lib.JOINT_SETS.items() if tuple(want) == v}
        raise InputError(path, f"joint set mismatch: missing {', '.join(missing)}; the model "
                               f"expects {sorted(known) or want}")
    idx = [names.index(n) for n in want]
    return x[:, :, idx], valid[:, :, idx]


def check_units(path: str, x: np.ndarray, valid: np.ndarray, meta: dict) -> None:
    """Radians for degrees (angles) or another unit: the spread is far from the training one."""
    vals = x[valid] if valid.any() else np.zeros((0, x.shape[-1]))
    if vals.size == 0:
        return
    train_mean = np.asarray(meta["stats"]["mean"], float)
    train_sd = np.asarray(meta["stats"]["std"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd_jc = np.nanstd(np.where(valid[..., None], x, np.nan), axis=(0, 1))
        ratio = float(np.nanmedian(sd_jc / np.maximum(train_sd, 1e-6)))
    biggest = float(np.nanmax(np.abs(vals)))
    train_span = float(np.max(np.abs(train_mean) + 2 * train_sd))
    if (meta.get("modality", "angles") == "angles" and biggest < RADIAN_MAX_ABS
            and train_span > 10 * RADIAN_MAX_ABS):
        raise InputError(path, f"angles look like radians (largest |value| {biggest:.2f}, "
                               f"training data reach {train_span:.0f}); convert to degrees")
    if not SCALE_RATIO <= ratio <= 1 / SCALE_RATIO:
        raise InputError(path, f"values spread {ratio:.3g}x the training data's: wrong units?")


def _finish(path: str, x, valid, side, meta: dict, notes: list) -> Strides:
    """Length, NaN handling, empty strides, units: the checks shared by all formats."""
    valid = valid & np.isfinite(x).all(-1)
    x, valid = _fit_length(path, x, valid, int(meta["num_frames"]), notes)
    if x.shape[-1] != int(meta["num_channels"]):
        raise InputError(path, f"{x.shape[-1]} channels per joint, the model expects "
                               f"{meta['num_channels']}")
    empty = ~valid.any((1, 2))
    if empty.all():
        raise InputError(path, "no stride has any valid (finite) value")
    if empty.any():
        notes.append(f"dropped {int(empty.sum())} stride(s) without valid values")
        x, valid = x[~empty], valid[~empty]
        side = None if side is None else side[~empty]
    gaps = 1.0 - valid.mean()
    if gaps > 0:
        notes.append(f"{100 * gaps:.1f} % of joint-frames missing (NaN or invalid): excluded")
    check_units(path, x, valid, meta)
    x = np.where(valid[..., None], x, np.nan).astype(np.float32)
    return Strides(x, valid, side, notes)


def load_npz(path: str, meta: dict) -> Strides:
    """Reads and checks an .npz of strides."""
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001  (zip/format errors of many kinds)
        raise InputError(path, f"not a readable .npz ({type(e).__name__})") from None
    if "angles" not in data:
        raise InputError(path, f"no 'angles' array (arrays: {', '.join(sorted(data)) or 'none'})")
    x = data["angles"]
    if x.dtype.kind not in "fiu":
        raise InputError(path, f"'angles' has dtype {x.dtype}; expected float degrees")
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or 0 in x.shape:
        raise InputError(path, f"'angles' has shape {data['angles'].shape}; expected "
                               f"[strides, T, J, C]")
    valid = np.ones(x.shape[:3], bool)
    if "valid" in data:
        v = data["valid"]
        v = v[None] if v.ndim == 2 else v
        if v.shape != x.shape[:3]:
            raise InputError(path, f"'valid' has shape {data['valid'].shape}; expected "
                                   f"{x.shape[:3]}")
        valid = v.astype(bool)
    side = data.get("side")
    if side is not None:
        side = np.asarray(side).astype(str).reshape(-1)
        if len(side) != len(x) or not set(side.tolist()) <= {"L", "R"}:
            raise InputError(path, "'side' must hold 'L' or 'R' for every stride")
    x, valid = _reorder(path, x.astype(np.float64), valid, data.get("joint_names"), meta)
    return _finish(path, x, valid, side, meta, [])


def joint_set_of(meta: dict) -> str | None:
    """The canonical joint set whose names are the checkpoint's (None if none is)."""
    want = tuple(meta["joint_names"])
    return next((k for k, v in joints_lib.JOINT_SETS.items() if v == want), None)


def load_c3d(path: str, meta: dict) -> Strides:
    """Reads a Plug-in-Gait trial and segments it into strides (tfds_gait; events marked or
    detected from the markers)."""
    from tfds_gait import c3d, errors, strides as strides_lib
    joint_set = joint_set_of(meta)
    if joint_set is None:
        raise InputError(path, f"the model's joints ({', '.join(meta['joint_names'])}) are no "
                               f"known joint set: cannot read them from a C3D file")
    try:
        trial = c3d.read_trial(path, joint_set=joint_set)
        rows = strides_lib.segment_strides(trial, num_points=int(meta["num_frames"]))
    except errors.GaitDataError as e:
        raise InputError(path, str(e).removeprefix(f"{path}: ")) from None
    if not rows:
        raise InputError(path, "no usable stride (trial too short, no two foot strikes of one "
                               "side, or every stride skipped: see the warning above)")
    x = np.stack([np.asarray(r["angles"], np.float64) for r in rows])
    valid = np.stack([np.asarray(r["valid"], bool) for r in rows])
    side = np.array([str(r["side"]) for r in rows])
    x, valid = _reorder(path, x, valid, trial.joint_names, meta)
    notes = [f"{sum(r['events'] == 'marked' for r in rows)} of {len(rows)} stride(s) between "
             f"marked events, the others detected from the markers"]
    return _finish(path, x, valid, side, meta, notes)


def load_input(path: str, meta: dict) -> Strides:
    """Dispatches on the suffix (.npz or .c3d)."""
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return load_npz(path, meta)
    if ext == ".c3d":
        return load_c3d(path, meta)
    raise InputError(path, f"unknown input type {ext or '(none)'}: expected .c3d or .npz")


def load_run_files(workdir: str) -> tuple[dict, dict]:
    """(model meta, calibration) of a workdir; cheap JSON reads, before any model restore."""
    if not os.path.isdir(workdir):
        raise InputError(workdir, "no such workdir")
    meta = read_json(os.path.join(workdir, "model_meta.json"))
    from gengait_jax import calibration
    try:
        cal = calibration.load(workdir)
    except FileNotFoundError as e:
        raise InputError(os.path.join(workdir, calibration.FILE), str(e).split(": ", 1)[-1]) \
            from None
    if cal.get("model_id") != meta.get("model_id"):
        raise InputError(os.path.join(workdir, calibration.FILE),
                         f"calibrates model {cal.get('model_id')}, not {meta.get('model_id')}: "
                         f"recalibrate (--calibrate)")
    return meta, cal


def channel_info(meta: dict) -> tuple[list[str], str]:
    """Channel names and units from the meta (angles: the three planes in degrees)."""
    c = int(meta["num_channels"])
    if meta.get("channel_names"):
        return list(meta["channel_names"]), meta.get("units", "")
    if meta.get("modality", "angles") == "angles" and c == len(joints_lib.CHANNELS):
        return list(joints_lib.CHANNELS), meta.get("units", "deg")
    return [f"channel {i}" for i in range(c)], meta.get("units", "")


def normative_curves(meta: dict, cal: dict) -> tuple[dict, str]:
    """Stride side -> (mean, sd) [T, J, C] and where they come from.

    Published norms (tfds_gait.normative, per the joint's own cycle) when available: for a
    stride of side S the other side's joints are half a cycle later (rolled by T/2). Else the
    validation cohort's curves saved in the calibration, else the flat training mean/SD.
    """
    names, t = list(meta["joint_names"]), int(meta["num_frames"])
    try:
        from tfds_gait import normative
        mean, sd = (np.asarray(a, float) for a in normative.normative_band(names, num_points=t))
    except (ImportError, AttributeError, KeyError, ValueError):
        mean = None
    if mean is not None and np.isfinite(mean).any():
        out = {"*": (mean, sd)}
        for side in ("L", "R"):
            other = np.array([n[:1] not in (side, "") for n in names])
            roll = lambda a: np.where(other[None, :, None], np.roll(a, t // 2, axis=0), a)
            out[side] = (roll(mean), roll(sd))
        return out, "published normative data"
    ref = cal.get("reference") or {}
    if ref:
        return ({k: (np.asarray(v["mean"]), np.asarray(v["sd"])) for k, v in ref.items()},
                f"validation cohort ({ref.get('*', {}).get('n_strides', '?')} strides)")
    m, s = (np.asarray(meta["stats"][k], float) for k in ("mean", "std"))
    return {"*": (np.broadcast_to(m, (t,) + m.shape), np.broadcast_to(s, (t,) + s.shape))}, \
        "training mean/SD (not per gait phase)"


def analyse(model, strides: Strides, cal: dict, *, keep_observed: bool = True,
            num_samples: int = 8) -> dict:
    """Both passes: per-stride scores and z, the trial decision, the twin."""
    from gengait_jax import calibration, scoring, twin
    p1 = scoring.score_strides(model, strides.angles, strides.valid,
                               num_context=int(cal.get("num_context", 0)))
    z = calibration.zscores(p1.score_nj, cal)
    trial = calibration.trial_decision(z, cal)
    flagged_nj = np.broadcast_to(trial["flagged"], z.shape)
    tw = twin.normative_twin(model, strides.angles, strides.valid, flagged_nj,
                             num_samples=num_samples, keep_observed=keep_observed,
                             residual_sd_tjc=cal.get("residual_sd"))
    return dict(pass1=p1, z_nj=z, stride_flags=calibration.stride_flags(z, cal), trial=trial,
                twin=tw)


def _nanmedian(a, axis=0):
    """nanmedian without the all-NaN warning."""
    a = np.asarray(a, float)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis) if a.shape[axis] else np.full(a.shape[1:], np.nan)


def scores_json(res: dict, strides: Strides, meta: dict, cal: dict, input_path: str) -> dict:
    """The scores.json content (schema: BUILD_NOTES "Detect")."""
    p1, z, trial = res["pass1"], res["z_nj"], res["trial"]
    channels, units = channel_info(meta)
    joints_out = {}
    for j, name in enumerate(meta["joint_names"]):
        scored = bool(np.isfinite(z[:, j]).any())
        per_stride = [{"stride": i, "side": None if strides.side is None else str(strides.side[i]),
                       "score": p1.score_nj[i, j], "z": z[i, j],
                       "flagged": bool(res["stride_flags"][i, j]),
                       "valid_fraction": round(float(p1.valid_frac_nj[i, j]), 3)}
                      for i in range(len(z))]
        rms_c = _nanmedian(p1.rms_njc[:, j])
        joints_out[name] = {
            "name": joints_lib.pretty(name) if name[:1] in "LR" else name,
            "score": _nanmedian(p1.score_nj[:, j]) if scored else None,
            "z": trial["z"][j] if scored else None, "flagged": bool(trial["flagged"][j]),
            "scored": scored, "n_strides_scored": int(np.isfinite(z[:, j]).sum()),
            "units": units, "per_stride": per_stride,
            "channels": {ch: {"rms": rms_c[c]} for c, ch in enumerate(channels)},
            "phase_error": np.round(_nanmedian(p1.map_ntj[:, :, j]), 3)}
    names = list(meta["joint_names"])
    return {"input": input_path, "model_id": meta.get("model_id"), "calibration_id": cal["id"],
            "n_strides": int(len(z)), "sides": None if strides.side is None
            else strides.side.tolist(), "units": units,
            "threshold": {"z": trial["threshold"], "alpha": cal["alpha"], "mode": cal["mode"],
                          "statistic": f"median z over {trial['k']} stride(s), max over joints",
                          "calibration_strides": cal["n_strides"]},
            "flagged": [n for n, f in zip(names, trial["flagged"]) if f],
            "not_scored": [n for n, v in joints_out.items() if not v["scored"]],
            "notes": strides.notes, "joints": joints_out}


def summary(scores: dict) -> str:
    """A short human summary of scores.json."""
    j = scores["joints"]
    sides = scores.get("sides")
    side_txt = "" if not sides else " (" + ", ".join(
        f"{sides.count(s)} {s}" for s in ("L", "R") if sides.count(s)) + ")"
    lines = [f"{scores['input']}: {scores['n_strides']} stride(s){side_txt}; flag threshold "
             f"z > {scores['threshold']['z']:.2f} (false-flag rate "
             f"{100 * scores['threshold']['alpha']:.0f} % per healthy trial)"]
    lines += [f"  note: {n}" for n in scores["notes"]]
    flagged = sorted(scores["flagged"], key=lambda n: -j[n]["z"])
    lines.append("  flagged: " + (", ".join(
        f"{j[n]['name']} (z {j[n]['z']:.1f}, {j[n]['score']:.1f} {j[n]['units']})"
        for n in flagged) or "none"))
    if scores["not_scored"]:
        lines.append("  not scored (too little valid data): " + ", ".join(
            j[n]["name"] for n in scores["not_scored"]))
    return "\n".join(lines)


def write_outputs(out_dir: str, res: dict, strides: Strides, meta: dict, cal: dict,
                  scores: dict) -> dict:
    """scores.json, twin.npz, twin.csv and report.png in out_dir; returns their paths."""
    from gengait_jax import report
    os.makedirs(out_dir, exist_ok=True)
    names, tw = list(meta["joint_names"]), res["twin"]
    channels, units = channel_info(meta)
    paths = {"scores": report.write_json(os.path.join(out_dir, "scores.json"), scores)}
    paths["twin_npz"] = os.path.join(out_dir, "twin.npz")
    np.savez_compressed(paths["twin_npz"], input=strides.angles, twin=tw.twin_ntjc, band=tw.sd_ntjc,
                        recon=tw.recon_ntjc, valid=strides.valid, joint_names=np.array(names),
                        channel_names=np.array(channels), flagged=res["trial"]["flagged"],
                        side=np.array([] if strides.side is None else strides.side))
    paths["twin_csv"] = report.write_twin_csv(
        os.path.join(out_dir, "twin.csv"), joint_names=names, channel_names=channels,
        x_ntjc=strides.angles, twin_ntjc=tw.twin_ntjc, sd_ntjc=tw.sd_ntjc, sides=strides.side)
    norm, source = normative_curves(meta, cal)
    paths["report"] = report.plot_report(
        os.path.join(out_dir, "report.png"), joint_names=names, channel_names=channels,
        units=units, x_ntjc=strides.angles, twin_ntjc=tw.twin_ntjc, sd_ntjc=tw.sd_ntjc,
        z_j=res["trial"]["z"], flagged_j=res["trial"]["flagged"],
        scored_j=np.isfinite(res["z_nj"]).any(0), threshold=res["trial"]["threshold"],
        normative=norm, sides=strides.side,
        title=f"GenGait — {os.path.basename(scores['input'])}: {len(strides.angles)} "
              f"stride(s); model {meta.get('model_id')}, calibration {cal['id']}; "
              f"grey band: {source}")
    return paths


def run(workdir: str, input_path: str, out_dir: str, *, keep_observed: bool = True,
        num_samples: int = 8) -> tuple[dict, dict]:
    """The whole command: checks (cheap ones first), both passes, outputs; (scores, paths)."""
    meta, cal = load_run_files(workdir)
    strides = load_input(input_path, meta)
    from gengait_jax import train
    try:
        model = train.restore_model(workdir)[0]
    except FileNotFoundError as e:
        raise InputError(workdir, str(e)) from None
    res = analyse(model, strides, cal, keep_observed=keep_observed, num_samples=num_samples)
    scores = scores_json(res, strides, meta, cal, input_path)
    return scores, write_outputs(out_dir, res, strides, meta, cal, scores)
