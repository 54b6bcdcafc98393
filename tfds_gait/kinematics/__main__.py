r"""Compares the marker kinematics of a C3D trial with the file's Plug-in-Gait angle outputs.

  python -m tfds_gait.kinematics FILE.c3d --compare
  python -m tfds_gait.kinematics FILE.c3d ... --compare --summary   # BUILD_NOTES table

Prints ONE JSON object per file: the marker set, and per joint [sagittal, frontal,
transverse] the RMS difference (deg), the mean offset (ours - Vicon) and the RMS after
removing that offset. --summary prints instead the worst file and side per joint as a
markdown table.
Differences are wrapped to [-180, 180) (Cardan angles near +-180 deg, e.g. foot progression
after a turn, can still differ by the other Cardan solution). A file without Plug-in-Gait
outputs or without a known marker set: one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tfds_gait import c3d
from tfds_gait.errors import GaitDataError


def compare(path: str) -> dict:
    """RMS / offset / offset-removed RMS per joint x plane: markers vs Plug-in-Gait outputs."""
    try:
        vicon = c3d.read_trial(path, angles="plugin_gait")
    except GaitDataError as e:
        raise GaitDataError(path, f"no Plug-in-Gait angle outputs to compare with "
                                  f"({e.problem})") from None
    ours = c3d.read_trial(path, angles="markers")
    err = (ours.angles.astype(float) - vicon.angles + 180.0) % 360.0 - 180.0
    with np.errstate(invalid="ignore"):
        offset = np.nanmean(err, axis=0)
        rms = np.sqrt(np.nanmean(err ** 2, axis=0))
        centred = np.sqrt(np.nanmean((err - offset) ** 2, axis=0))
    table = lambda a: {j: [round(float(v), 2) for v in a[i]] for i, j in
                       enumerate(vicon.joint_names)}
    return {"marker_set": ours.marker_set, "file": path, "frames": int(len(err)),
            "rms_deg": table(rms), "offset_deg": table(offset),
            "rms_offset_removed_deg": table(centred), "notes": list(ours.notes)}


def summary(results: list[dict]) -> str:
    """Markdown: per joint the worst sagittal RMS, frontal / transverse RMS without offset,
    and the largest offsets, over the files and both sides."""
    rows = ["| joint | sagittal RMS (deg) | frontal RMS, offset removed | transverse RMS, offset "
            "removed | largest offset sag / front / trans |", "|---|---|---|---|---|"]
    for base in ("Pelvis", "Hip", "Knee", "Ankle", "FootProgress"):
        get = lambda key: np.array([r[key][s + base] for r in results for s in "LR"])
        rms, cen, off = get("rms_deg"), get("rms_offset_removed_deg"), np.abs(get("offset_deg"))
        rows.append(f"| {base} | {rms[:, 0].max():.2f} | {cen[:, 1].max():.2f} | "
                    f"{cen[:, 2].max():.2f} | " + " / ".join(f"{v:.2f}" for v in off.max(0))
                    + " |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m tfds_gait.kinematics",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--compare", action="store_true", required=True,
                        help="compare with the file's Plug-in-Gait angle outputs")
    parser.add_argument("--summary", action="store_true",
                        help="one markdown table over all files (worst file and side)")
    args = parser.parse_args(argv)
    try:
        results = [compare(f) for f in args.files]
        if args.summary:
            print(summary(results))
        else:
            for r in results:
                print(json.dumps(r))
    except GaitDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
