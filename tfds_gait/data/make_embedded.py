"""Writes the compact embedded cohort: trimmed copies of the source C3D trials.

Usage: python -m tfds_gait.data.make_embedded SRC_DIR OUT_DIR
SRC_DIR holds `biomechzoo/<subject>/<trial>.c3d` and `gaitalytics/treadmill_events.c3d`
(the folder layout of the project's shared data). Each output keeps only the angle outputs
of every joint set, the markers event detection needs, the events, the point rate and the
first frame; analogs and all other points are dropped (39 MB -> about 2 MB). The trials are
written as OUT_DIR/<subject>/<trial>.c3d, so the subject id rule of `tfds_gait.c3d` applies.
"""

from __future__ import annotations

import os
import shutil
import sys

import ezc3d
import numpy as np

from tfds_gait import c3d as c3d_lib
from tfds_gait import joints

# The gaitalytics treadmill trial's subject (PROCESSING/subject name in the file is SI02).
_RENAME = {"gaitalytics": "SI02"}


def _keep_labels() -> list[str]:
    """Angle outputs of every joint set, then the event markers."""
    angles = {joints.c3d_label(j) for names in joints.JOINT_SETS.values() for j in names}
    return sorted(angles) + list(c3d_lib.EVENT_MARKERS)


def trim(src: str, dst: str) -> None:
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
    ev = c["parameters"].get("EVENT", {})
    if "TIMES" in ev and int(np.ravel(ev["USED"]["value"])[0]) > 0:
        new.add_parameter("EVENT", "USED", [int(np.ravel(ev["USED"]["value"])[0])])
        new.add_parameter("EVENT", "CONTEXTS", list(ev["CONTEXTS"]["value"]))
        new.add_parameter("EVENT", "LABELS", list(ev["LABELS"]["value"]))
        new.add_parameter("EVENT", "TIMES", np.asarray(ev["TIMES"]["value"]).tolist())
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    new.write(dst)


def main(src_dir: str, out_dir: str) -> None:
    """Trims every source trial into out_dir/<subject>/ and copies the licenses."""
    zoo = os.path.join(src_dir, "biomechzoo")
    for subject in sorted(os.listdir(zoo)):
        folder = os.path.join(zoo, subject)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                trim(os.path.join(folder, name), os.path.join(out_dir, subject, name))
    trim(os.path.join(src_dir, "gaitalytics", "treadmill_events.c3d"),
         os.path.join(out_dir, _RENAME["gaitalytics"], "treadmill_events.c3d"))
    for source in ("biomechzoo", "gaitalytics"):
        shutil.copy(os.path.join(src_dir, source, "LICENSE"),
                    os.path.join(out_dir, f"LICENSE.{source}"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
