"""TFDS builder: array_record without TensorFlow, subject-disjoint splits, c3d_dir, stats."""

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_gait
from gengait_jax import data
from tfds_gait import gait_cycles
from tfds_gait.errors import GaitDataError


def _subjects(name, split, data_dir):
    src = tfds.data_source(name, split=split, data_dir=data_dir)
    return {src[i]["subject"] for i in range(len(src))}


def test_data_source_items(embedded_data_dir):
    assert importlib.util.find_spec("tensorflow") is None
    src = tfds.data_source("gait_cycles/embedded", split="train", data_dir=embedded_data_dir)
    item = src[0]
    assert item["angles"].shape == (100, 10, 3) and item["angles"].dtype == np.float32
    assert item["valid"].shape == (100, 10) and item["valid"].dtype == bool
    assert {"subject", "side"} <= set(item)


def test_splits_are_subject_disjoint_and_fixed(embedded_data_dir):
    got = {s: _subjects("gait_cycles/embedded", s, embedded_data_dir)
           for s in ("train", "validation", "test")}
    assert not (got["train"] & got["validation"]) and not (got["train"] & got["test"])
    assert not (got["validation"] & got["test"])
    for split, names in gait_cycles.EMBEDDED_SPLITS.items():
        assert {n.encode() for n in names} == got[split]


def _field(name, split, data_dir, key):
    src = tfds.data_source(name, split=split, data_dir=data_dir)
    return [src[i][key].decode() for i in range(len(src))]


def test_embedded_cohort_is_every_shipped_lab(embedded_data_dir):
    rows = {s: list(zip(*(_field("gait_cycles/embedded", s, embedded_data_dir, k)
                          for k in ("subject", "cohort", "age_group", "angle_source"))))
            for s in ("train", "validation", "test")}
    every = [r for v in rows.values() for r in v]
    assert len({r[0] for r in every}) >= 25 and len(every) >= 180
    assert {r[1] for r in every} == set(gait_cycles.COHORTS)
    assert {r[3] for r in every} == {"plugin_gait", "markers"}
    for split in ("validation", "test"):  # stratified: children and adults, >= 2 labs
        assert {r[2] for r in rows[split]} == {"child", "adult"}
        assert len({r[1] for r in rows[split]}) >= 2


def test_leave_one_cohort_out(tmp_path, embedded_data_dir):
    data_dir = str(tmp_path)
    tfds.builder("gait_cycles/loco_schreiber2019", data_dir=data_dir).download_and_prepare()
    cohort = {s: set(_field("gait_cycles/loco_schreiber2019", s, data_dir, "cohort"))
              for s in ("train", "validation", "test")}
    assert cohort["test"] == {"schreiber2019"}
    assert "schreiber2019" not in cohort["train"] | cohort["validation"]
    n_test = len(_field("gait_cycles/loco_schreiber2019", "test", data_dir, "subject"))
    assert n_test == sum(c == "schreiber2019" for s in ("train", "validation", "test")
                         for c in _field("gait_cycles/embedded", s, embedded_data_dir,
                                         "cohort"))
    emb_test = set(_field("gait_cycles/embedded", "test", embedded_data_dir, "subject"))
    assert not emb_test & set(_field("gait_cycles/loco_schreiber2019", "train", data_dir,
                                     "subject"))


def test_stats_from_train_split(embedded_data_dir):
    tr = data.load_split("gait_cycles/embedded", "train", embedded_data_dir)
    mean, std = data.stats(tr)
    knee = tr.x[:, :, 2, 0][tr.valid[:, :, 2]]
    assert mean.shape == std.shape == (10, 3) and tr.joint_names[2] == "LKnee"
    np.testing.assert_allclose(mean[2, 0], knee.mean(), rtol=1e-4)
    np.testing.assert_allclose(std[2, 0], knee.std(), rtol=1e-4)


def test_c3d_dir_on_fixture_folder(tmp_path):
    folder = tmp_path / "lab"
    for cohort, subject in (("gaitalytics", "SI02"), ("biomechzoo", "HC036A")):
        shutil.copytree(os.path.join(gait_cycles.EMBEDDED_DIR, cohort, subject),
                        folder / subject)
    (folder / "HC036A" / "broken.c3d").write_text("not a c3d")
    data_dir = str(tmp_path / "tfds")
    b = tfds.builder("gait_cycles/c3d_dir", data_dir=data_dir)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    n = sum(len(tfds.data_source("gait_cycles/c3d_dir", split=s, data_dir=data_dir))
            for s in b.info.splits)
    assert n == 20 + 3  # all treadmill strides + the three straight-walk strides
    for s in b.info.splits:
        for subj in _subjects("gait_cycles/c3d_dir", s, data_dir):
            assert gait_cycles.hash_split(subj.decode()) == s


def test_empty_c3d_dir_is_a_one_line_error(tmp_path):
    with pytest.raises(GaitDataError, match="no .c3d files found"):
        gait_cycles.read_folder(str(tmp_path))


def test_build_and_read_never_import_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "import tensorflow_datasets as tfds, tfds_gait\n"
        f"b = tfds.builder('gait_cycles/embedded', data_dir={str(tmp_path)!r})\n"
        "b.download_and_prepare()\n"
        f"src = tfds.data_source('gait_cycles/embedded', split='test', data_dir={str(tmp_path)!r})\n"
        "print(len(src), src[0]['angles'].shape)\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(tfds_gait.__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(100, 10, 3)" in out.stdout


def test_reader_processes_give_the_strides_of_one_process(tmp_path):
    src = os.path.join(gait_cycles.EMBEDDED_DIR, "schreiber2019")
    for k in range(4):  # 4 copies of the cohort: > 2 x MIN_FILES_PER_WORKER walking trials
        shutil.copytree(src, tmp_path / f"copy{k}", copy_function=os.link)
    subject = next(d for d in sorted(os.listdir(src)) if os.path.isdir(os.path.join(src, d)))
    (tmp_path / "copy0" / subject / "broken.c3d").write_bytes(b"not a c3d")
    walks = [f for _, _, fs in os.walk(tmp_path) for f in fs
             if not gait_cycles.c3d_lib.is_static_name(f)]
    assert len(walks) >= 2 * gait_cycles.MIN_FILES_PER_WORKER
    one = gait_cycles.read_folder(str(tmp_path), workers=1)
    two = gait_cycles.read_folder(str(tmp_path), workers=2)  # the broken file: skipped in both
    key = lambda s: (s["subject"], s["trial"], s["side"], s["stride_index"])
    assert [key(s) for s in one] == [key(s) for s in two] and len(one) > 100
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["angles"], b["angles"])
        assert a["cohort"] == b["cohort"] and a["age_group"] == b["age_group"]
