"""Detect inputs -> checked `data.Strides` in the model's joint order and stride length.

A `.c3d` trial (Plug-in-Gait outputs or the markers of a known set) or an OpenSim / OpenCap
`.trc` marker file (segmented into strides by tfds_gait, events marked or detected from the
markers; a skeleton model takes the joint centres of its markers), or an `.npz` with `angles`
(`positions` for a skeleton model) [N, T, J, C] (or one stride [T, J, C]), `side` [N] ('L' /
'R'; required where the joints have sides) and optional `valid` [N, T, J] and `joint_names`
[J]. Every problem raises GaitDataError: ONE line naming the file and the problem. What was
fixed on the way (resampling, dropped strides, estimated measurements) is returned as notes.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from gengait_jax import data
from tfds_gait import c3d, gait_cycles, joints as joints_lib, keypoints as keypoints_lib
from tfds_gait import skeleton as skeleton_lib, strides as strides_lib
from tfds_gait.errors import GaitDataError

MIN_POINTS = 20       # fewer points per stride than this: not a time-normalized stride
RADIAN_MAX_ABS = 3.5  # angles whose largest |value| is below this (~pi) look like radians
DEGREE_MAX_ABS = 360.0  # joint angles (Cardan, degrees) never reach beyond this
SCALE_RATIO = 0.1     # input spread < 0.1x (or > 10x) the training spread: wrong units
# A walk flexes the hips and knees far more than it abducts or rotates them: the sagittal
# spread over their median is >= 1.89x the largest other plane's in the 97 walking trials of
# the 4 labs, and 0.24-0.30x with the planes out of order (BUILD_NOTES "Reliability", D24).
ORDER_JOINTS = ("LHip", "RHip", "LKnee", "RKnee")
ORDER_MIN_RATIO = 0.75
SUFFIXES = (".c3d", ".trc", ".npz", ".csv")
SIDE_NEEDED = ("each stride's side is needed ('L' or 'R': the foot whose heel strike starts "
               "it), as left and right joints are compared each in its own gait cycle")


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
        raise GaitDataError(path, f"strides have {t_in} points, too short: expected {t} "
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
            raise GaitDataError(path, f"{x.shape[2]} joints, but the model expects {len(want)} "
                                      f"({', '.join(want)})")
        return x, valid
    names = [str(n) for n in np.asarray(names).tolist()]
    missing = [n for n in want if n not in names]
    if missing:
        known = {k: v for k, v in joints_lib.JOINT_SETS.items() if tuple(want) == v}
        raise GaitDataError(path, f"joint set mismatch: missing {', '.join(missing)}; the model "
                                  f"expects {sorted(known) or want}")
    idx = [names.index(n) for n in want]
    return x[:, :, idx], valid[:, :, idx]


def spread(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """SD of each joint-channel's valid values over strides and time [J, C] (NaN: none)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # joints without a valid frame: NaN
        return np.nanstd(np.where(valid[..., None], x, np.nan), axis=(0, 1))


def check_units(path: str, x: np.ndarray, valid: np.ndarray, sd_jc: np.ndarray,
                meta: dict) -> None:
    """Radians for degrees, values no angle reaches (angles), or another unit: the spread
    sd_jc (`spread`) is far from the training one."""
    vals = x[valid] if valid.any() else np.zeros((0, x.shape[-1]))
    if vals.size == 0:
        return
    train_mean = np.asarray(meta["stats"]["mean"], float)
    train_sd = np.asarray(meta["stats"]["std"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(np.nanmedian(sd_jc / np.maximum(train_sd, 1e-6)))
    biggest = float(np.nanmax(np.abs(vals)))
    train_span = float(np.max(np.abs(train_mean) + 2 * train_sd))
    if (meta.get("modality", "angles") == "angles" and biggest < RADIAN_MAX_ABS
            and train_span > 10 * RADIAN_MAX_ABS):
        raise GaitDataError(path, f"angles look like radians (largest |value| {biggest:.2f}, "
                                  f"training data reach {train_span:.0f}); convert to degrees")
    if meta.get("modality", "angles") == "angles" and biggest > DEGREE_MAX_ABS:
        raise GaitDataError(path, f"values reach {biggest:.3g}: not joint angles in degrees "
                                  f"(those stay within +-{DEGREE_MAX_ABS:.0f})")
    if not SCALE_RATIO <= ratio <= 1 / SCALE_RATIO:
        raise GaitDataError(path, f"values spread {ratio:.3g}x the training data's: wrong "
                                  f"units?")


def check_channel_order(path: str, sd_jc: np.ndarray, meta: dict) -> None:
    """Angles whose planes are out of order (e.g. frontal first): the hips and knees do not
    move most in the first (sagittal) channel: median over ORDER_JOINTS of its spread (sd_jc,
    `spread`) over the largest other channel's below ORDER_MIN_RATIO. Only for models whose
    training data move most there too (real walks; not the tests' synthetic strides)."""
    names = list(meta["joint_names"])
    if meta.get("modality", "angles") != "angles" or not set(ORDER_JOINTS) <= set(names):
        return
    idx = [names.index(n) for n in ORDER_JOINTS]
    if np.argmax(np.median(np.asarray(meta["stats"]["std"], float)[idx], axis=0)) != 0:
        return
    sd = sd_jc[idx]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # hips and knees without a valid frame
        ratio = float(np.nanmedian(sd[:, 0] / sd[:, 1:].max(axis=1)))
    if ratio < ORDER_MIN_RATIO:
        most = int(np.nanargmax(np.nanmedian(sd, axis=0))) + 1
        raise GaitDataError(path, f"the angle channels look out of order: the hips and knees "
                                  f"move most in channel {most}, not 1 ({ratio:.2f}x as much "
                                  f"there); expected {', '.join(joints_lib.CHANNELS)}")


def _finish(path: str, x, valid, side, meta: dict, notes: list, **fields) -> data.Strides:
    """Length, NaN handling, empty strides, units: the checks shared by all formats."""
    valid = valid & np.isfinite(x).all(-1)
    x, valid = _fit_length(path, x, valid, int(meta["num_frames"]), notes)
    if x.shape[-1] != int(meta["num_channels"]):
        raise GaitDataError(path, f"{x.shape[-1]} channels per joint, the model expects "
                                  f"{meta['num_channels']}")
    empty = ~valid.any((1, 2))
    if empty.all():
        raise GaitDataError(path, "no stride has any valid (finite) value")
    if empty.any():
        notes.append(f"dropped {int(empty.sum())} stride(s) without valid values")
        x, valid = x[~empty], valid[~empty]
        side = None if side is None else side[~empty]
        fields = {k: v[~empty] for k, v in fields.items()}
    gaps = 1.0 - valid.mean()
    if gaps > 0:
        notes.append(f"{100 * gaps:.1f} % of joint-frames missing (NaN or invalid): excluded")
    sd_jc = spread(x, valid)
    check_units(path, x, valid, sd_jc, meta)
    check_channel_order(path, sd_jc, meta)
    if side is None and data.sided(meta["joint_names"]):
        raise GaitDataError(path, f"no 'side' array: {SIDE_NEEDED}")
    return data.from_arrays(x, valid, side=side, joint_names=meta["joint_names"], **fields)


def load_npz(path: str, meta: dict, notes: list) -> data.Strides:
    """Reads and checks an .npz of strides, or of keypoints (`keypoints` [frames, K, 3] with
    `joint_names` [K] and `rate`: a recording, cut into strides here)."""
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001  (zip/format errors of many kinds)
        raise GaitDataError(path, f"not a readable .npz ({type(e).__name__})") from None
    if "keypoints" in arrays:
        return load_keypoints(path, arrays, meta, notes)
    key = meta.get("modality", "angles")
    if key not in arrays:
        raise GaitDataError(path, f"no '{key}' array (arrays: "
                                  f"{', '.join(sorted(arrays)) or 'none'})")
    x = arrays[key]
    if x.dtype.kind not in "fiu":
        raise GaitDataError(path, f"'{key}' has dtype {x.dtype}; expected float "
                                  f"{'degrees' if key == 'angles' else 'numbers'}")
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or 0 in x.shape:
        raise GaitDataError(path, f"'{key}' has shape {arrays[key].shape}; expected "
                                  f"[strides, T, J, C]")
    valid = np.ones(x.shape[:3], bool)
    if "valid" in arrays:
        v = arrays["valid"]
        v = v[None] if v.ndim == 2 else v
        if v.shape != x.shape[:3]:
            raise GaitDataError(path, f"'valid' has shape {arrays['valid'].shape}; expected "
                                      f"{x.shape[:3]}")
        valid = v.astype(bool)
    side = arrays.get("side")
    if side is not None:
        side = np.array([c3d.SIDE_WORDS.get(s.strip().lower(), "?")
                         for s in np.asarray(side).astype(str).reshape(-1)])
        if len(side) != len(x):
            raise GaitDataError(path, f"'side' has {len(side)} entries for {len(x)} strides")
        if "?" in side.tolist():
            raise GaitDataError(path, "'side' must hold 'L' or 'R' (or left / right) for every "
                                      "stride")
    x, valid = _reorder(path, x.astype(np.float64), valid, arrays.get("joint_names"), meta)
    return _finish(path, x, valid, side, meta, notes)


def load_keypoints(path: str, arrays: dict, meta: dict, notes: list) -> data.Strides:
    """A recording of 3D keypoints (tfds_gait.keypoints) -> the skeleton strides of a
    positions model (events from the feet)."""
    if meta.get("modality", "angles") != "positions":
        raise GaitDataError(path, "keypoints give a skeleton; this model reads joint angles "
                                  "(train a skeleton model: --config=...:demo_skeleton)")
    for key in ("joint_names", "rate"):
        if key not in arrays:
            raise GaitDataError(path, f"keypoints need '{key}' (arrays: "
                                      f"{', '.join(sorted(arrays))})")
    rate = float(np.asarray(arrays["rate"]).ravel()[0])
    trial = keypoints_lib.trial_from_points(path, arrays["keypoints"],
                                            [str(n) for n in arrays["joint_names"]], rate)
    return _strides_of(path, trial, meta, notes, "positions")


def joint_set_of(meta: dict) -> str | None:
    """The canonical joint set whose names are the checkpoint's (None if none is)."""
    want = tuple(meta["joint_names"])
    return next((k for k, v in joints_lib.JOINT_SETS.items() if v == want), None)


def load_trial(path: str, meta: dict, notes: list, static: str | None = "auto") -> data.Strides:
    """Reads a C3D or .trc trial and segments it into strides (events marked or detected)."""
    joint_set, modality = joint_set_of(meta), meta.get("modality", "angles")
    if joint_set is None:
        raise GaitDataError(path, f"the model's joints ({', '.join(meta['joint_names'])}) are "
                                  f"no known joint set: cannot read them from a C3D file")
    skeleton = modality == "positions"  # read through the angles' joint set, then the centres
    trial = c3d.read_trial(path, joint_set=gait_cycles.JOINT_SET if skeleton else joint_set,
                           static=static)
    return _strides_of(path, trial, meta, notes, modality)


def _strides_of(path: str, trial, meta: dict, notes: list, modality: str) -> data.Strides:
    """The trial's strides of the model's modality, checked and in the model's order."""
    skeleton = modality == "positions"
    if skeleton and trial.kinematics is None:
        raise GaitDataError(path, "no joint centres for a skeleton: the markers are not a known "
                                  "marker set, or a hip, knee or ankle marker is missing")
    rows = strides_lib.segment_strides(trial, num_points=int(meta["num_frames"]),
                                       require=data.VALID_FEATURE[modality])
    if not rows:
        raise GaitDataError(path, "no usable stride (trial too short, no two foot strikes of "
                                  "one side, or every stride skipped: see the warning above)")
    x = np.stack([np.asarray(r[modality], np.float64) for r in rows])
    valid = np.stack([np.asarray(r[data.VALID_FEATURE[modality]], bool) for r in rows])
    side = np.array([str(r["side"]) for r in rows])
    names = joints_lib.joint_names(skeleton_lib.JOINT_SET) if skeleton else trial.joint_names
    x, valid = _reorder(path, x, valid, names, meta)
    source = {"plugin_gait": "Plug-in-Gait outputs", "keypoints": "keypoints"}.get(
        trial.angle_source, f"the {trial.marker_set} markers")
    what = (f"joint centres from the {trial.marker_set} markers"
            if skeleton and trial.angle_source != "keypoints" else
            "skeleton from 3D keypoints" if skeleton else f"angles from {source}")
    notes += [f"{what}; {sum(r['events'] == 'marked' for r in rows)} of "
              f"{len(rows)} stride(s) between marked events, the others detected"]
    notes += list(trial.notes)
    return _finish(path, x, valid, side, meta, notes,
                   foot_off_pct=np.array([r["foot_off_pct"] for r in rows]),
                   subject=np.array([trial.subject] * len(rows)),
                   trial=np.array([trial.trial] * len(rows)))


def load_folder(folder: str, meta: dict, static: str | None = "auto"
                ) -> tuple[data.Strides, list[str]]:
    """Every trial under `folder` (static trials skipped) as one set of strides, each file
    read as `load` reads it; the person is the file's first sub-folder (one folder per
    person) or, for a file directly in `folder`, its name before the first '_'."""
    if not os.path.isdir(folder):
        raise GaitDataError(folder, "no such folder")
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if os.path.splitext(f)[1].lower() in SUFFIXES and not c3d.is_static_name(f))
    if not paths:
        raise GaitDataError(folder, f"no trial ({', '.join(SUFFIXES)}) in the folder")
    parts, notes = [], []
    for path in paths:
        strides, file_notes = load(path, meta, static)
        rel = os.path.relpath(path, folder)
        top = rel.split(os.sep)
        person = top[0] if len(top) > 1 else os.path.splitext(top[0])[0].split("_")[0]
        parts.append(strides.replace(subject=np.full(len(strides), person),
                                     trial=np.full(len(strides), rel)))
        notes += [f"{rel}: {n}" for n in file_notes]
    return data.concat(parts), notes


def load(path: str, meta: dict, static: str | None = "auto") -> tuple[data.Strides, list]:
    """(strides, notes) of an input file, dispatched on its suffix."""
    if not os.path.exists(path):
        raise GaitDataError(path, "no such file")
    if os.path.isdir(path):
        raise GaitDataError(path, "a folder, not a trial file")
    ext = os.path.splitext(path)[1].lower()
    notes: list[str] = []
    if ext == ".npz":
        return load_npz(path, meta, notes), notes
    if ext in (".c3d", ".trc"):
        return load_trial(path, meta, notes, static), notes
    if ext == ".csv":
        pts, names, rate = keypoints_lib.read_csv(path)
        return load_keypoints(path, dict(keypoints=pts, joint_names=np.array(names),
                                         rate=np.array(rate)), meta, notes), notes
    raise GaitDataError(path, f"unknown input type {ext or '(none)'}: expected "
                              f"{' or '.join(SUFFIXES)}")
