r"""Data at scale: builds `gait_cycles/c3d_dir` from a folder of N C3D trials made from the
shipped ones (every embedded subject folder copied under new subject ids, hard links where
possible) with 1 and with W reader processes; prints strides/s and peak memory.

  python -m benchmarks.data_scale --trials=2000 --workers=1,2 --output=data_scale.json
"""

import json
import os
import resource
import shutil
import sys
import tempfile
import time

import tensorflow_datasets as tfds
from absl import app, flags

from tfds_gait import c3d as c3d_lib
from tfds_gait import gait_cycles

_TRIALS = flags.DEFINE_integer("trials", 2000, "Walking trials in the generated folder.")
_WORKERS = flags.DEFINE_list("workers", ["1", str(os.cpu_count())], "Reader processes to time.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results.")


def _subject_dirs() -> list[tuple[str, int]]:
    """(subject folder, walking trials in it) of every shipped cohort."""
    out = []
    for cohort in gait_cycles.COHORTS:
        root = os.path.join(gait_cycles.EMBEDDED_DIR, cohort)
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isdir(path):
                walks = [f for f in os.listdir(path) if f.lower().endswith(".c3d")
                         and not c3d_lib.is_static_name(f)]
                out.append((path, len(walks)))
    return out


def make_folder(dest: str, trials: int) -> int:
    """Copies shipped subject folders as new subjects (r<k>_<id>) until `trials` walks."""
    n, k, subjects = 0, 0, _subject_dirs()
    while n < trials:
        for path, walks in subjects:
            if n >= trials:
                break
            shutil.copytree(path, os.path.join(dest, f"r{k:03d}_{os.path.basename(path)}"),
                            copy_function=_link_or_copy)
            n += walks
        k += 1
    return n


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (no disk) or, across file systems, a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build(folder: str, data_dir: str, workers: int) -> dict:
    """Builds c3d_dir from the folder; wall time, strides, strides/s."""
    t0 = time.perf_counter()
    b = tfds.builder("gait_cycles/c3d_dir", data_dir=data_dir, workers=workers)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=folder))
    wall = time.perf_counter() - t0
    strides = sum(s.num_examples for s in b.info.splits.values())
    return dict(workers=workers, wall_s=wall, strides=strides, strides_per_s=strides / wall)


def main(argv) -> None:
    """Generates the folder, times each worker count, prints and writes the results."""
    del argv
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "c3d")
        os.makedirs(folder)
        walks = make_folder(folder, _TRIALS.value)
        res = dict(trials=walks, files=sum(len(f) for _, _, f in os.walk(folder)),
                   cpu_count=os.cpu_count(), runs=[])
        for w in map(int, _WORKERS.value):
            res["runs"].append(build(folder, os.path.join(tmp, f"tfds_{w}"), w))
            print(json.dumps(res["runs"][-1]), flush=True)
    # ru_maxrss is KiB on Linux: this process (the writer) and the largest reader process.
    res["peak_rss_mib_main"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["peak_rss_mib_largest_worker"] = resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(res, indent=1))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(res, f, indent=1)
    print(f"{walks} trials", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
