"""Normalization statistics of a prepared dataset's TRAIN split, saved beside its files."""

from __future__ import annotations

import json
import os

import numpy as np

from tfds_gait.errors import GaitDataError

STATS_FILE = "stats.json"


def compute_stats(angles_stjc: np.ndarray, valid_stj: np.ndarray) -> dict[str, np.ndarray]:
    """Per (joint, channel) mean and SD over the valid samples: float32 [J, C] each."""
    w = valid_stj[..., None].astype(np.float64)
    n = np.maximum(w.sum(axis=(0, 1)), 1.0)
    mean = (angles_stjc * w).sum(axis=(0, 1)) / n
    var = (((angles_stjc - mean) ** 2) * w).sum(axis=(0, 1)) / n
    return {"mean": mean.astype(np.float32), "std": np.sqrt(var).astype(np.float32)}


def write_stats(builder, joint_names: tuple[str, ...]) -> dict:
    """Computes the train-split stats of a prepared builder and writes them beside it."""
    src = builder.as_data_source(split="train")
    items = [src[i] for i in range(len(src))]
    angles = np.stack([it["angles"] for it in items])
    valid = np.stack([it["valid"] for it in items])
    stats = compute_stats(angles, valid)
    out = {"mean": stats["mean"].tolist(), "std": stats["std"].tolist(),
           "joint_names": list(joint_names), "num_strides": len(items),
           "split": "train"}
    with open(os.path.join(os.fspath(builder.data_dir), STATS_FILE), "w") as f:
        json.dump(out, f, indent=1)
    return out


def load_stats(name: str, data_dir: str) -> dict:
    """Loads the stats of a prepared dataset ('gait_cycles/embedded'); arrays as float32."""
    import tensorflow_datasets as tfds

    import tfds_gait  # noqa: F401  (registers the builder)

    builder = tfds.builder(name, data_dir=data_dir)
    path = os.path.join(os.fspath(builder.data_dir), STATS_FILE)
    if not os.path.exists(path):
        raise GaitDataError(path, f"no normalization stats: prepare {name} first")
    with open(path) as f:
        stats = json.load(f)
    stats["mean"] = np.asarray(stats["mean"], np.float32)
    stats["std"] = np.asarray(stats["std"], np.float32)
    return stats
