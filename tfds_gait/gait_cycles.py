"""TFDS builder `gait_cycles`: one example per stride, array_record, no TensorFlow needed.

Features: `angles` [T, 10, 3] (the `lower` joint set, degrees) with `valid` [T, 10], and the
same stride's skeleton `positions` [T, 11, 3] (tfds_gait.skeleton: body frame, % leg length)
with `positions_valid` [T, 11] (all False where a trial has no joint centres), plus metadata.

Configs:
- `embedded` (default): every healthy cohort shipped in `tfds_gait/data/embedded`
  (`<cohort>/<subject>/<trial>.c3d`: biomechZoo children, gaitalytics, Schreiber 2019 and
  Fukuchi 2018 adults), read by the same reader as a lab's files, split by subject with the
  fixed lists of EMBEDDED_SPLITS (stratified: validation and test hold children and adults of
  two or more cohorts).
- `loco_<cohort>`: leave-one-cohort-out. train / validation = the embedded train / validation
  subjects of the OTHER cohorts; test = every subject of `<cohort>`.
- `c3d_dir`: a lab's own C3D folder given as `manual_dir`. Subject id = the first folder
  level below manual_dir (files directly in manual_dir: the file stem before '_').
  Split by a stable hash of the subject id: 80 % train, 10 % validation, 10 % test.
- `synthetic`: 150 subjects drawn from a cohort model fitted on the embedded train split;
  130 / 10 / 10 subjects (the 10 test subjects are the paper's 10 held out).
Static trials (`c3d.is_static_name`) are not walks: they calibrate the walks next to them.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import multiprocessing as mp
import os
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds

from tfds_gait import c3d as c3d_lib
from tfds_gait import joints as joints_lib
from tfds_gait import skeleton as skeleton_lib
from tfds_gait import strides as strides_lib
from tfds_gait import synthetic as synthetic_lib
from tfds_gait.errors import GaitDataError

EMBEDDED_DIR = os.path.join(os.path.dirname(__file__), "data", "embedded")
NUM_POINTS = 100
MIN_FILES_PER_WORKER = 50  # a spawned reader process costs ~2 s to start; a file ~10 ms
JOINT_SET = "lower"
ADULT_AGE = 18.0
# The shipped cohorts (folders of EMBEDDED_DIR) and their age group (BUILD_NOTES "Data").
COHORTS = {
    "biomechzoo": "child",      # 25-60 kg, 1.23-1.74 m, no ages in the files
    "gaitalytics": "adult",     # 55 kg, 1.72 m treadmill subject
    "schreiber2019": "adult",   # 21-63 years (anthropometrics.csv)
    "fukuchi2018": "adult",     # the dataset's adults (21-84 years)
}
# Fixed subject splits of the embedded cohort (see BUILD_NOTES.md "Splits").
EMBEDDED_SPLITS = {
    "train": ("HC033A", "HC032A", "HC036A", "HC038A", "HC039A", "HC040A", "SI02",
              "2014001", "2014015", "2014019", "2014022", "2014025", "2014031", "2014050",
              "2015032", "WBDS42"),
    "validation": ("HC030A", "HC002D", "2014004", "2014048", "2015007", "WBDS19"),
    "test": ("HC044A", "HC031A", "2014014", "2014030", "2015035"),
}
LOCO_COHORTS = ("biomechzoo", "schreiber2019", "fukuchi2018")
SYNTHETIC_SUBJECTS = {"train": 130, "validation": 10, "test": 10}
SYNTHETIC_STRIDES_PER_SUBJECT = 10
SYNTHETIC_SEED = 0
_TEXT_FIELDS = ("subject", "trial", "side", "events", "cohort", "age_group", "angle_source",
                "marker_set")


def hash_split(subject: str) -> str:
    """Stable 80/10/10 split of a subject id (c3d_dir)."""
    h = int(hashlib.sha256(subject.encode()).hexdigest(), 16) % 10
    return "test" if h == 0 else "validation" if h == 1 else "train"


def _c3d_files(folder: str) -> list[str]:
    """All .c3d files below a folder (case-insensitive), sorted."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.join(root, f) for f in files if f.lower().endswith(".c3d")]
    return sorted(out)


def subject_of(path: str, folder: str) -> str:
    """The documented subject-id rule of a file inside a c3d_dir folder."""
    rel = os.path.relpath(path, folder).split(os.sep)
    return rel[0] if len(rel) > 1 else os.path.splitext(rel[0])[0].split("_")[0]


def age_group(trial: c3d_lib.Trial, default: str) -> str:
    """'child' / 'adult' from PROCESSING:Age when the file has it, else `default`."""
    age = trial.anthropometrics.get("age_years")
    return default if age is None else "adult" if age >= ADULT_AGE else "child"


def _read_walk(path: str, folder: str, joint_set: str,
               default_age_group: str) -> tuple[list[dict], dict, str | None]:
    """One walking trial -> (its strides, skipped-stride counts, the error or None): the unit
    of work of read_folder's worker processes."""
    skipped: dict = {}
    try:
        trial = c3d_lib.read_trial(path, joint_set, subject=subject_of(path, folder))
        group = age_group(trial, default_age_group)
        strides = strides_lib.segment_strides(trial, NUM_POINTS, skipped_counts=skipped)
        return [dict(st, age_group=group) for st in strides], skipped, None
    except GaitDataError as e:
        return [], skipped, str(e)


def _read_walks(walks: list[str], folder: str, joint_set: str, default_age_group: str,
                workers: int) -> list[tuple[list[dict], dict, str | None]]:
    """_read_walk of every file, in `workers` spawned processes where the folder is large
    enough to pay for their start (>= MIN_FILES_PER_WORKER files each), else here."""
    workers = min(workers, len(walks) // MIN_FILES_PER_WORKER)
    args = (walks, [folder] * len(walks), [joint_set] * len(walks),
            [default_age_group] * len(walks))
    if workers <= 1:
        return list(map(_read_walk, *args))
    # spawn, not fork: the caller may already run JAX's threads (launch.train).
    with futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_read_walk, *args, chunksize=8))


def read_folder(folder: str, joint_set: str = JOINT_SET, cohort: str | None = None,
                default_age_group: str = "unknown", workers: int = 1) -> list[dict]:
    """Strides of every readable walking C3D of a folder (read by `workers` processes);
    unreadable files are skipped with a warning. Each stride carries `cohort` (default: the
    folder's name) and `age_group`."""
    files = _c3d_files(folder) if os.path.isdir(folder) else []
    walks = [p for p in files if not c3d_lib.is_static_name(p)]
    if not walks:
        raise GaitDataError(folder, "no .c3d files found (is it the right folder?)" if not files
                            else "only static trials (names with _ST / static / cal) found")
    cohort = cohort or os.path.basename(os.path.normpath(folder))
    out, bad, skipped = [], 0, collections.Counter()
    for strides, skips, error in _read_walks(walks, folder, joint_set, default_age_group,
                                             workers):
        skipped.update(skips)
        if error is not None:
            logging.warning("skipping %s", error)
            bad += 1
        out += [dict(st, cohort=cohort) for st in strides]
    if any(skipped.values()):
        logging.info("%s: %d strides from %d files; skipped strides: %s (rules: "
                     "tfds_gait/strides.py)", folder, len(out), len(walks) - bad,
                     ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v))
    if not out:
        raise GaitDataError(folder, f"no usable strides in {len(walks)} C3D files "
                                    f"({bad} unreadable)")
    return out


def read_embedded() -> list[dict]:
    """Strides of every shipped cohort (EMBEDDED_DIR/<cohort>/<subject>/...)."""
    return [s for cohort, group in COHORTS.items()
            for s in read_folder(os.path.join(EMBEDDED_DIR, cohort), cohort=cohort,
                                 default_age_group=group)]


def embedded_split(subject: str) -> str:
    """The split of an embedded subject (EMBEDDED_SPLITS); unknown ids train."""
    return next((k for k, v in EMBEDDED_SPLITS.items() if subject in v), "train")


def loco_split(stride: dict, left_out: str) -> str | None:
    """Leave-one-cohort-out: the left-out cohort is the test split; the test subjects of the
    other cohorts are not used (None)."""
    if stride["cohort"] == left_out:
        return "test"
    split = embedded_split(stride["subject"])
    return None if split == "test" else split


def _example(s: dict) -> dict:
    """The stored fields of one stride."""
    return {k: s[k] for k in ("angles", "valid", "positions", "positions_valid", "stride_index",
                              "duration_s", "foot_off_pct", "speed_m_s") + _TEXT_FIELDS}


def _configs() -> list[tfds.core.BuilderConfig]:
    """embedded, one leave-one-cohort-out config per cohort, c3d_dir, synthetic."""
    return ([tfds.core.BuilderConfig(name="embedded", description="Shipped real cohorts.")]
            + [tfds.core.BuilderConfig(name=f"loco_{c}", description=f"Test on {c}, train "
                                       "on the other shipped cohorts.") for c in LOCO_COHORTS]
            + [tfds.core.BuilderConfig(name="c3d_dir", description="A lab's C3D folder "
                                       "(manual_dir)."),
               tfds.core.BuilderConfig(name="synthetic", description="150-subject model "
                                       "cohort.")])


class GaitCycles(tfds.core.GeneratorBasedBuilder):
    """Gait strides [T, J, 3] of Plug-in-Gait joint angles (degrees) with validity masks."""

    VERSION = tfds.core.Version("2.1.0")
    RELEASE_NOTES = {"1.0.0": "Strides of the embedded, c3d_dir and synthetic cohorts.",
                     "2.0.0": "Four shipped cohorts (marker kinematics where a file has no "
                              "Plug-in-Gait outputs); cohort, age_group, angle_source, "
                              "marker_set; leave-one-cohort-out configs.",
                     "2.1.0": "`positions` [T, 11, 3] and `positions_valid`: the skeleton "
                              "(tfds_gait.skeleton) of the same strides, in the body frame."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "embedded"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("For `c3d_dir`: pass the folder of C3D files as "
                                    "manual_dir; one sub-folder per subject.")

    def __init__(self, *, file_format=None, workers: int = 0, **kwargs):
        """Defaults to array_record: random access through tfds.data_source, no TensorFlow.
        `workers`: processes reading a c3d_dir folder (0: one per CPU core)."""
        super().__init__(file_format=file_format or "array_record", **kwargs)
        self._workers = workers or os.cpu_count() or 1

    def _info(self) -> tfds.core.DatasetInfo:
        """Features of one stride."""
        j = len(joints_lib.joint_names(JOINT_SET))
        k = len(joints_lib.joint_names(skeleton_lib.JOINT_SET))
        f = tfds.features
        return self.dataset_info_from_configs(features=f.FeaturesDict({
            "angles": f.Tensor(shape=(NUM_POINTS, j, 3), dtype=np.float32),
            "valid": f.Tensor(shape=(NUM_POINTS, j), dtype=np.bool_),
            "positions": f.Tensor(shape=(NUM_POINTS, k, 3), dtype=np.float32),
            "positions_valid": f.Tensor(shape=(NUM_POINTS, k), dtype=np.bool_),
            **{k: f.Text() for k in _TEXT_FIELDS},
            "stride_index": f.Scalar(dtype=np.int32),
            "duration_s": f.Scalar(dtype=np.float32),
            "foot_off_pct": f.Scalar(dtype=np.float32),
            "speed_m_s": f.Scalar(dtype=np.float32),
        }), description=__doc__)

    def _strides(self, dl_manager) -> dict[str, list[dict]]:
        """Strides of this config grouped by split."""
        name = self.builder_config.name
        if name == "c3d_dir":
            try:
                folder = os.fspath(dl_manager.manual_dir)
            except AssertionError:  # TFDS' own check: manual_dir missing or empty
                folder = os.fspath(getattr(dl_manager, "_manual_dir", None) or "manual_dir")
                raise GaitDataError(folder, "no .c3d files found (the folder is missing or "
                                            "empty)") from None
            strides = read_folder(folder, workers=self._workers)
            split_of = lambda st: hash_split(st["subject"])
        elif name.startswith("loco_"):
            strides = read_embedded()
            split_of = lambda st: loco_split(st, name.removeprefix("loco_"))
        else:
            strides = read_embedded()
            split_of = lambda st: embedded_split(st["subject"])
        by_split = {"train": [], "validation": [], "test": []}
        for s in strides:
            split = split_of(s)
            if split is not None:
                by_split[split].append(s)
        if name == "synthetic":
            by_split = _synthetic(by_split["train"])
        return by_split

    def _split_generators(self, dl_manager):
        """One generator per non-empty split."""
        by_split = self._strides(dl_manager)
        return {k: self._generate_examples(v) for k, v in by_split.items() if v}

    def _generate_examples(self, strides: list[dict]):
        """Yields (key, example) per stride."""
        for s in strides:
            yield f"{s['subject']}/{s['trial']}/{s['side']}{s['stride_index']}", _example(s)


def _synthetic(train: list[dict]) -> dict[str, list[dict]]:
    """The synthetic cohort: a model fitted on the real train strides, sampled by seed."""
    angles = np.stack([s["angles"] for s in train])
    subjects = np.array([s["subject"] for s in train])
    sides = np.array([s["side"] for s in train])
    model = synthetic_lib.fit_cohort_model(angles, subjects, sides)
    total = sum(SYNTHETIC_SUBJECTS.values())
    draw = synthetic_lib.sample_cohort(model, total, SYNTHETIC_STRIDES_PER_SUBJECT,
                                       SYNTHETIC_SEED)
    k = len(joints_lib.joint_names(skeleton_lib.JOINT_SET))
    no_skeleton = dict(positions=np.zeros((NUM_POINTS, k, 3), np.float32),
                       positions_valid=np.zeros((NUM_POINTS, k), bool))  # angles-only model
    out, first = {}, 0
    for split, n in SYNTHETIC_SUBJECTS.items():
        keep = (draw["subject"] >= first) & (draw["subject"] < first + n)
        out[split] = [dict(angles=a, valid=np.ones(a.shape[:2], bool), subject=f"SYN{sub:03d}",
                           trial="synthetic", side=str(side), events="synthetic",
                           stride_index=i, duration_s=np.nan, foot_off_pct=np.nan,
                           speed_m_s=np.nan, cohort="synthetic", age_group="synthetic",
                           angle_source="synthetic", marker_set="", **no_skeleton)
                      for i, (a, sub, side) in enumerate(zip(draw["angles"][keep],
                                                             draw["subject"][keep],
                                                             draw["side"][keep]))]
        first += n
    return out
