"""C3D reader: real shipped files and one-line errors for bad files."""

import os
import shutil

import ezc3d
import numpy as np
import pytest

from tfds_gait import c3d
from tfds_gait.errors import GaitDataError

EMB = os.path.join(os.path.dirname(c3d.__file__), "data", "embedded")
TREADMILL = os.path.join(EMB, "gaitalytics", "SI02", "treadmill_events.c3d")
STRAIGHT = os.path.join(EMB, "biomechzoo", "HC036A", "Straight_HC036A10.c3d")


def test_reads_shipped_treadmill_trial():
    t = c3d.read_trial(TREADMILL)
    assert t.rate == 100.0
    assert t.subject == "SI02"
    assert t.angles.shape == (1206, 10, 3) and t.angles.dtype == np.float32
    assert np.isfinite(t.angles).all()
    assert [len(t.events[s]["strike"]) for s in "LR"] == [11, 11]
    assert [len(t.events[s]["off"]) for s in "LR"] == [11, 10]


def test_event_indices_account_for_first_frame():
    t = c3d.read_trial(STRAIGHT)
    # Marked left strikes at 1.57 s and 2.42 s with first_frame 57 -> indices 100 and 185.
    np.testing.assert_array_equal(t.events["L"]["strike"], [100, 185])


def _rewrite(src, dst, edit):
    c = ezc3d.c3d(src)
    edit(c)
    c.write(str(dst))
    return str(dst)


def test_text_file_named_c3d(tmp_path):
    p = tmp_path / "notes.c3d"
    p.write_text("subject walked fine\n")
    with pytest.raises(GaitDataError, match="notes.c3d: not a C3D file"):
        c3d.read_trial(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "cut.c3d"
    p.write_bytes(open(STRAIGHT, "rb").read()[:3000])
    with pytest.raises(GaitDataError) as e:
        c3d.read_trial(p)
    assert "cut.c3d" in str(e.value) and "\n" not in str(e.value)


def test_missing_label_lists_found(tmp_path):
    def drop_knee(c):
        labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
        labels[labels.index("LKneeAngles")] = "LKneeAnglesX"
        c["parameters"]["POINT"]["LABELS"]["value"] = labels
    p = _rewrite(STRAIGHT, tmp_path / "nokne.c3d", drop_knee)
    with pytest.raises(GaitDataError, match=r"nokne.c3d: missing angle labels \['LKneeAngles'\]"
                                            r".*found.*LHipAngles"):
        c3d.read_trial(p, angles="plugin_gait")
    t = c3d.read_trial(p)  # auto: the markers give every angle instead
    assert t.angle_source == "markers" and "incomplete" in t.notes[0]


def test_radians_rejected(tmp_path):
    def to_rad(c):
        labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
        angles = [i for i, lab in enumerate(labels) if lab.endswith("Angles")]
        c["data"]["points"][:3, angles] *= np.pi / 180.0
    p = _rewrite(STRAIGHT, tmp_path / "rad.c3d", to_rad)
    with pytest.raises(GaitDataError, match="rad.c3d: .*radians"):
        c3d.read_trial(p)


def test_all_nan_knee_rejected(tmp_path):
    def nan_knees(c):
        labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
        for name in ("LKneeAngles", "RKneeAngles"):
            c["data"]["points"][:3, labels.index(name)] = 0.0  # Vicon gap
    p = _rewrite(STRAIGHT, tmp_path / "gap.c3d", nan_knees)
    with pytest.raises(GaitDataError, match="gap.c3d: knee angles are all missing"):
        c3d.read_trial(p)


def test_missing_file():
    with pytest.raises(GaitDataError, match="nope.c3d: file not found"):
        c3d.read_trial("nope.c3d")


def test_subject_rule(tmp_path):
    d = tmp_path / "P07"
    d.mkdir()
    shutil.copy(STRAIGHT, d / "walk.c3d")
    assert c3d.read_trial(d / "walk.c3d").subject == "P07"
    assert c3d.read_trial(d / "walk.c3d", subject="X").subject == "X"


@pytest.mark.parametrize("label, context, want", [
    ("Foot Strike", "Left", ("L", "strike")), ("Foot Off", "Right", ("R", "off")),
    ("Foot Strike1", "Left", ("L", "strike")), ("Foot Strike2", "Right", ("R", "strike")),
    ("LHS", "", ("L", "strike")), ("RTO", "", ("R", "off")), ("Left Foot Strike", "", ("L", "strike")),
    ("R_FO", "General", ("R", "off")), ("LON", "", (None, None)), ("Event", "Left", (None, None)),
])
def test_event_label_styles(label, context, want):
    assert c3d.parse_event(label, context) == want


def test_schreiber_and_fukuchi_event_styles():
    emb = os.path.dirname(os.path.dirname(STRAIGHT))
    sch = c3d.read_trial(os.path.join(emb, "..", "schreiber2019", "2014001", "2014001_C4_05.c3d"))
    assert [len(sch.events[s]["strike"]) for s in "LR"] == [2, 2]  # Foot Strike1 / 2
    fuk = c3d.read_trial(os.path.join(emb, "..", "fukuchi2018", "WBDS19", "WBDS19walkT01.c3d"))
    assert [len(fuk.events[s]["strike"]) for s in "LR"] == [14, 16]  # LHS / RHS, no contexts
    assert any(n.startswith("ignored events with unknown labels: LOFF x16, LON x15") for n in
               fuk.notes)


def test_unknown_event_style_falls_back_to_detected_events(tmp_path):
    def odd(c):
        c["parameters"]["EVENT"]["LABELS"]["value"] = [
            "Whatever" for _ in c["parameters"]["EVENT"]["LABELS"]["value"]]
    p = _rewrite(STRAIGHT, tmp_path / "odd.c3d", odd)
    t = c3d.read_trial(p)
    assert all(t.events[s][k].size == 0 for s in "LR" for k in ("strike", "off"))
    assert any("unknown labels: Whatever x" in n for n in t.notes)
    from tfds_gait import strides
    got = strides.segment_strides(t)
    assert got and {s["events"] for s in got} == {"detected"}
