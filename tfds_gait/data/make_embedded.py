"""Writes the compact embedded cohort: trimmed copies of the source C3D trials.

Usage: python -m tfds_gait.data.make_embedded SRC_DIR OUT_DIR
SRC_DIR has the layout of the project's shared data: `biomechzoo/<subject>/*.c3d`,
`gaitalytics/treadmill_events.c3d`, `schreiber2019/<subject>/*.c3d` (+ anthropometrics.csv)
and `fukuchi2018/*.c3d`, each folder with its LICENSE. Each output keeps the Plug-in-Gait
angle outputs (where the file has them), the markers of every known marker set, the subject
measurements of PROCESSING, the events, the point rate and the first frame; analogs and all
other points are dropped. Point values are unchanged. Schreiber 2019's anthropometrics
(height, mass, leg lengths, age, sex) are written into PROCESSING (Height, Bodymass and leg
lengths in mm, as Vicon stores them). Output: OUT_DIR/<cohort>/<subject>/<trial>.c3d.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys

import ezc3d
import numpy as np

from tfds_gait import c3d as c3d_lib
from tfds_gait import joints, marker_sets

# (cohort folder, the gaitalytics trial's subject: PROCESSING/subject name in the file)
_GAITALYTICS_SUBJECT = "SI02"
_PROCESSING_KEYS = ("MarkerDiameter", "Bodymass", "Height", "InterAsisDistance", "Age",
                    *(s + k for s in "LR" for k in (
                        "LegLength", "KneeWidth", "AnkleWidth", "AsisTrocanterDistance",
                        "ThighRotation", "ShankRotation", "TibialTorsion", "StaticPlantFlex",
                        "StaticRotOff")))


def _keep_labels() -> list[str]:
    """Angle outputs of every joint set, then the labels of every known marker set."""
    angles = {joints.c3d_label(j) for names in joints.JOINT_SETS.values() for j in names}
    markers = {lab for ms in marker_sets.MARKER_SETS for labs in ms.labels.values()
               for lab in labs}
    return sorted(angles) + sorted(markers)


def trim(src: str, dst: str, extra_processing: dict | None = None) -> None:
    """Writes a trimmed copy of one C3D trial."""
    c = ezc3d.c3d(src)
    labels = c3d_lib._labels(c["parameters"])
    idx = [labels.index(k) for k in _keep_labels() if k in labels]
    new = ezc3d.c3d()
    new["parameters"]["POINT"]["RATE"]["value"] = c["parameters"]["POINT"]["RATE"]["value"]
    new["parameters"]["POINT"]["LABELS"]["value"] = [labels[i] for i in idx]
    new["parameters"]["POINT"]["UNITS"]["value"] = ["mm"]
    new.add_parameter("POINT", "ANGLE_UNITS", ["deg"])
    new["data"]["points"] = np.asarray(c["data"]["points"])[:, idx, :]
    new["header"]["points"]["first_frame"] = c["header"]["points"]["first_frame"]
    proc = c["parameters"].get("PROCESSING", {})
    values = {k: float(np.ravel(proc[k]["value"])[0]) for k in _PROCESSING_KEYS
              if k in proc and len(np.ravel(proc[k]["value"]))}
    values.update(extra_processing or {})
    for k, v in values.items():
        new.add_parameter("PROCESSING", k, [v])
    ev = c["parameters"].get("EVENT", {})
    if "TIMES" in ev and int(np.ravel(ev["USED"]["value"])[0]) > 0:
        new.add_parameter("EVENT", "USED", [int(np.ravel(ev["USED"]["value"])[0])])
        if "CONTEXTS" in ev:
            new.add_parameter("EVENT", "CONTEXTS", list(ev["CONTEXTS"]["value"]))
        new.add_parameter("EVENT", "LABELS", list(ev["LABELS"]["value"]))
        new.add_parameter("EVENT", "TIMES", np.asarray(ev["TIMES"]["value"]).tolist())
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    new.write(dst)


def schreiber_processing(csv_path: str) -> dict[str, dict]:
    """subject -> PROCESSING values from Schreiber 2019's anthropometrics.csv."""
    out = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            out[row["subjectID"]] = {"Height": 1000 * float(row["height"]),
                                     "Bodymass": float(row["mass"]), "Age": float(row["age"]),
                                     "LLegLength": 1000 * float(row["leftLegLength"]),
                                     "RLegLength": 1000 * float(row["rightLegLength"])}
    return out


def _copy_folder(src: str, dst: str, extra: dict[str, dict] | None = None) -> None:
    """Trims every <subject>/<trial>.c3d of a cohort folder."""
    for subject in sorted(os.listdir(src)):
        folder = os.path.join(src, subject)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.lower().endswith(".c3d"):
                    trim(os.path.join(folder, name), os.path.join(dst, subject, name),
                         (extra or {}).get(subject))


def main(src_dir: str, out_dir: str) -> None:
    """Trims every source trial into out_dir/<cohort>/<subject>/ and copies the licenses."""
    _copy_folder(os.path.join(src_dir, "biomechzoo"), os.path.join(out_dir, "biomechzoo"))
    trim(os.path.join(src_dir, "gaitalytics", "treadmill_events.c3d"),
         os.path.join(out_dir, "gaitalytics", _GAITALYTICS_SUBJECT, "treadmill_events.c3d"))
    schreiber = os.path.join(src_dir, "schreiber2019")
    _copy_folder(schreiber, os.path.join(out_dir, "schreiber2019"),
                 schreiber_processing(os.path.join(schreiber, "anthropometrics.csv")))
    shutil.copy(os.path.join(schreiber, "anthropometrics.csv"),
                os.path.join(out_dir, "schreiber2019", "anthropometrics.csv"))
    fukuchi = os.path.join(src_dir, "fukuchi2018")
    for name in sorted(os.listdir(fukuchi)):
        if name.lower().endswith(".c3d"):  # WBDS19walkT01 -> subject WBDS19
            trim(os.path.join(fukuchi, name),
                 os.path.join(out_dir, "fukuchi2018", name.split("walk")[0], name))
    for cohort in ("biomechzoo", "gaitalytics", "schreiber2019", "fukuchi2018"):
        for lic in sorted(os.listdir(os.path.join(src_dir, cohort))):
            if lic.startswith("LICENSE"):
                shutil.copy(os.path.join(src_dir, cohort, lic),
                            os.path.join(out_dir, cohort, lic))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
