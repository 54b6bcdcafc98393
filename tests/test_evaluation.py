"""Evaluation tables: `compute` on hand-built records with known answers."""

import json

import numpy as np
import pytest

from gengait_jax import baselines, data, evaluation, evaluation_report

T, J, C = 20, 4, 3
KINDS = ("stiff_knee", "drop_foot")


def _records(seed=0, *, perfect=True):
    """Clean strides of 4 subjects + each perturbed on one joint per kind, with a known answer.

    perfect=True: the detector's z is largest on the perturbed joint, flags exactly it and the
    twin restores the clean stride. perfect=False: it flags joint 0 always and the twin is the
    input (no correction).
    """
    rng = np.random.default_rng(seed)
    n_clean = 8
    base = np.sin(np.linspace(0, 2 * np.pi, T))[None, :, None, None] * 10
    clean = base + rng.normal(0, 1, (n_clean, 1, J, C))
    subj = np.repeat(np.arange(4), 2)
    parts = {k: [] for k in ("perturbed", "clean", "truth", "kind", "severity", "subject",
                             "side")}

    def add(x, c, truth, kind, sev, s):
        for k, v in zip(parts, (x, c, truth, kind, sev, s, "L")):
            parts[k].append(v)

    for i in range(n_clean):
        add(clean[i], clean[i], np.zeros((J, C), bool), evaluation.CLEAN, 0.0, subj[i])
        for kind_i, kind in enumerate(KINDS):
            for sev in (0.5, 1.0):
                joint = (i + kind_i) % J
                truth = np.zeros((J, C), bool)
                truth[joint, 0] = True
                x = clean[i].copy()
                x[:, joint, 0] += 20 * sev
                add(x, clean[i], truth, kind, sev, subj[i])
    rec = {k: np.array(v) for k, v in parts.items()}
    aff = rec["truth"].any(-1)
    if perfect:
        rec["z"] = aff * 5.0 + rng.normal(0, 0.1, aff.shape)
        rec["flags"] = aff.copy()
        rec["twin"] = rec["clean"].copy()
    else:
        rec["z"] = np.tile(np.arange(J, 0, -1.0), (len(aff), 1))
        rec["flags"] = np.zeros_like(aff)
        rec["flags"][:, 0] = True
        rec["twin"] = rec["perturbed"].copy()
    rec["scores"] = rec["z"] * 2.0
    return rec, clean


def test_perfect_detector_and_twin():
    rec, clean = _records()
    ref = baselines.fit_reference(clean)
    out = evaluation.compute(rec, ref)
    loc, cor = out["localization"], out["correction"]
    assert loc["top1_accuracy"] == 1.0 and loc["auroc"] == 1.0 and loc["f1"] == 1.0
    assert loc["false_flag_rate"] == 0.0 and loc["n_clean_strides"] == 8
    assert cor["deviation_after_deg"] == 0.0 and cor["deviation_before_deg"] > 10
    assert cor["p_value"] < 1e-4 and cor["effect_size"] == 1.0
    assert out["preservation"]["rms_change_deg"] == 0.0  # twin == clean off the truth joints
    assert out["n_strides"] == 32 and out["n_subjects"] == 4
    assert out["clean"]["n_strides"] == 8 and out["clean"]["rms_change_deg"] == 0.0


def test_per_abnormality_tables_and_counts():
    rec, clean = _records()
    out = evaluation.compute(rec, baselines.fit_reference(clean))
    assert set(out["per_abnormality"]) == set(KINDS)
    for kind in KINDS:
        t = out["per_abnormality"][kind]
        assert t["n_strides"] == 16 and t["n_subjects"] == 4
        assert t["correction"]["n_strides"] == 16 and t["correction"]["n_subjects"] == 4
        assert t["baselines"]["chance"]["top1_accuracy"] == pytest.approx(1 / J)
    assert set(out["per_abnormality_severity"]) == {f"{k}@{s:g}" for k in KINDS for s in (0.5, 1)}
    assert out["per_abnormality_severity"]["drop_foot@0.5"]["n_strides"] == 8


def test_failing_detector_is_reported_as_failing():
    rec, clean = _records(perfect=False)
    out = evaluation.compute(rec, baselines.fit_reference(clean))
    loc, cor = out["localization"], out["correction"]
    assert loc["top1_accuracy"] == pytest.approx(0.25)  # joint 0 is the truth 1 time in 4
    assert loc["false_flag_rate"] == 1.0 and loc["precision"] == pytest.approx(0.25)
    assert cor["deviation_after_deg"] == pytest.approx(cor["deviation_before_deg"])
    assert np.isnan(cor["p_value"]) or cor["p_value"] > 0.05
    # The population mean on the same flags beats a twin that changes nothing where it hits.
    pm = out["baselines"]["population_mean"]
    assert pm["deviation_after_deg"] < cor["deviation_after_deg"]


def test_baselines_localize_a_large_perturbation():
    rec, clean = _records()
    out = evaluation.compute(rec, baselines.fit_reference(clean))
    z = out["baselines"]["zscore"]
    assert z["top1_accuracy"] == 1.0 and z["auroc"] == 1.0
    assert out["baselines"]["envelope"]["recall"] == 1.0
    assert out["baselines"]["population_mean"]["oracle_deviation_after_deg"] < \
        out["correction"]["deviation_before_deg"]


def test_required_keys_and_strict_json():
    rec, clean = _records()
    out = evaluation.jsonable(evaluation.compute(rec, baselines.fit_reference(clean)))
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    for path in ("localization.top1_accuracy", "localization.auroc",
                 "localization.false_flag_rate", "correction.deviation_before_deg",
                 "correction.deviation_after_deg", "correction.p_value",
                 "correction.effect_size", "preservation.rms_change_deg",
                 "baselines.zscore.top1_accuracy",
                 "baselines.population_mean.deviation_after_deg"):
        node = back
        for key in path.split("."):
            node = node[key]
        assert node is None or isinstance(node, (int, float)), path


def test_preservation_measures_change_of_unaffected_joints_only():
    rec, clean = _records()
    aff = rec["truth"].any(-1)[:, None, :, None]
    rec["twin"] = np.where(aff, rec["clean"], rec["perturbed"] + 1.5)  # touches healthy joints
    out = evaluation.compute(rec, baselines.fit_reference(clean))
    assert out["preservation"]["rms_change_deg"] == pytest.approx(1.5)
    assert out["correction"]["deviation_after_deg"] == 0.0
    assert out["clean"]["rms_change_deg"] == pytest.approx(1.5)


def test_markdown_and_plots(tmp_path):
    from gengait_jax import evaluation_report
    rec, clean = _records(perfect=False)
    ev = evaluation.jsonable(evaluation.compute(rec, baselines.fit_reference(clean)))
    ev["setting"] = {"data_name": "toy", "split": "test"}
    md = evaluation_report.markdown(ev)
    assert "| drop_foot | 16 / 4 |" in md and "## stiff_knee" in md
    assert "does not beat zscore" in md  # a losing GenGait is said so, with numbers
    paths = evaluation_report.plots(ev, str(tmp_path))
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in paths)


def test_build_records_puts_clean_strides_first():
    test = data.from_arrays(np.zeros((2, T, J, C)), subject=["s1", "s2"], side=["L", "R"],
                            trial=["t1", "t2"])
    truth = np.zeros((3, J, C), bool)
    truth[:, 1, 0] = True
    sim = {"angles": np.ones((3, T, J, C)), "clean_index": np.array([1, 0, 1]),
           "kind": np.array(["a", "b", "a"]), "severity": np.array([0.5, 1.0, 1.0]),
           "truth": truth}
    rec = evaluation.build_records(test, sim)
    assert rec["kind"].tolist() == ["clean", "clean", "a", "b", "a"]
    assert rec["subject"].tolist() == ["s1", "s2", "s2", "s1", "s2"]
    assert rec["side"].tolist() == ["L", "R", "R", "L", "R"]
    assert not rec["truth"][:2].any() and rec["truth"][2:, 1, 0].all()
    np.testing.assert_array_equal(rec["clean"][2:], 0.0)
    np.testing.assert_array_equal(rec["perturbed"][2:], 1.0)
    assert rec["trial"].tolist() == ["s1/t1", "s2/t2", "s2/t2", "s1/t1", "s2/t2"]
    groups = evaluation.trial_groups(rec)  # one recording x abnormality x severity
    assert len(set(groups.tolist())) == 5 and groups[0] != groups[3]


# --- With a real (untrained, tiny) model, the real simulator and calibration -----------------

@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory, embedded_data_dir):
    """A workdir (config, meta, checkpoint, calibration) of an untrained `tiny` model."""
    import orbax.checkpoint as ocp
    from flax import nnx

    from gengait_jax import calibration, train_state
    from gengait_jax.configs import default
    from gengait_jax.workdir import Workdir
    from tfds_gait import joints
    path = tmp_path_factory.mktemp("eval_workdir")
    cfg = default.tiny()
    cfg.data.data_dir = embedded_data_dir
    names = list(joints.joint_names("lower"))
    shape = dict(num_frames=100, num_joints=len(names), num_channels=3)
    refs = data.References(np.zeros((10, 3), np.float32), np.full((10, 3), 20.0, np.float32),
                           None, np.arange(10, dtype=np.int32))
    state = train_state._new_state(cfg, shape, refs)
    meta = dict(dataset=cfg.data.name, joint_names=names, model_id="untrained-tiny", **shape,
                stats=dict(mean=refs.mean_jc.tolist(), std=refs.std_jc.tolist()))
    wd = Workdir(path)
    wd.write_config(cfg)
    wd.write_meta(meta)
    with ocp.CheckpointManager(wd.checkpoints, item_names=("state", "data")) as mngr:
        mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(nnx.state(state)),
                                             data=ocp.args.JsonSave({})))
        mngr.wait_until_finished()
    # Calibrated on made-up residuals: the model is untrained, only the wiring is tested.
    rng = np.random.default_rng(0)
    res = rng.normal(0, 3.0, (40, 100, len(names), 3))
    wd.write_calibration(calibration.fit(res, np.where(np.arange(40) % 2, "L", "R"),
                                         np.arange(40) % 8, names, model_id="untrained-tiny"))
    return path


def test_launcher_writes_json_markdown_and_plots(tiny_workdir, tmp_path):
    import subprocess
    import sys
    from tfds_gait import abnormalities
    workdir = tiny_workdir
    r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}",
                        f"--output={tmp_path}", "--severities=1.0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    assert ev["setting"]["split"] == "test" and ev["setting"]["data_name"] == "gait_cycles/embedded"
    n_test, kinds = ev["setting"]["n_test_strides"], abnormalities.ABNORMALITIES
    assert ev["n_subjects"] == ev["setting"]["n_test_subjects"] >= 1
    assert ev["n_strides"] == n_test * len(kinds)  # one severity
    assert ev["localization"]["n_clean_strides"] == n_test
    assert set(ev["per_abnormality"]) == set(kinds)
    assert ev["reference"]["sides"] == ["L", "R"] and ev["reference"]["n_strides"] > n_test
    assert ev["correction"]["deviation_before_deg"] > 0
    assert isinstance(ev["localization"]["top1_accuracy"], float)
    trials = ev["trials"]  # one recording x abnormality: all its strides in one decision
    assert trials["n_trials"] >= len(kinds) and trials["n_clean_trials"] >= 1
    assert set(ev["trials_per_severity"]) == {"1"} and set(ev["per_severity"]) == {"1"}
    assert 0 <= trials["false_flag_rate"] <= 1 and isinstance(trials["recall"], float)
    assert "baselines" in ev and "per_abnormality" in ev
    md = (tmp_path / "evaluation.md").read_text()
    assert "| GenGait (z-scores, twin) |" in md and "## foot_drop" in md
    assert (tmp_path / "evaluation_deviation.png").stat().st_size > 1000
    assert "| all abnormalities |" in r.stdout


def test_bilateral_evaluation_perturbs_both_sides_of_every_recording(tiny_workdir,
                                                                      monkeypatch):
    from tfds_gait import abnormalities, joints
    made = []
    real = abnormalities.make_evaluation_set
    monkeypatch.setattr(abnormalities, "make_evaluation_set",
                        lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    ev = evaluation.evaluate(str(tiny_workdir), severities=(1.0,), bilateral=True)
    assert ev["setting"]["perturbed_sides"] == "both"
    sim, = made
    names = list(joints.joint_names("lower"))
    knee = sim["kind"] == "stiff_knee"
    assert knee.any() and (sim["affected_side"] == "LR").all()
    assert sim["truth"][knee][:, [names.index("LKnee"), names.index("RKnee")], 0].all()
    assert ev["per_abnormality"]["stiff_knee"]["localization"]["n_strides"] == knee.sum()


def test_launcher_missing_workdir_is_one_line_error(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--workdir={tmp_path}/nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path}/nope: no such workdir"


def test_a_skeleton_report_writes_its_units_not_degrees():
    ev = {"setting": {"units": "% leg length"}}
    assert evaluation_report.in_units("before (deg) | 3.1 deg", ev) == (
        "before (% leg length) | 3.1 % leg length")
    assert evaluation_report.in_units("before (deg)", {"setting": {}}) == "before (deg)"


def test_compare_table_puts_both_settings_side_by_side():
    rec, clean = _records()
    ev = evaluation.compute(rec, baselines.fit_reference(clean))
    other = dict(ev, setting={"modality": "positions", "units": "% leg length",
                              "model_id": "skel"})
    ev["setting"] = {"modality": "angles", "units": "deg", "model_id": "ang"}
    ev["other_settings"] = [other]
    sev = next(iter(ev["per_severity"]))
    table = evaluation_report.compare_table(ev, sev)
    assert "angles (ang)" in table and "positions (skel)" in table
    lines = table.splitlines()
    assert all(line.count("|") == 4 for line in lines)  # a label and two settings per row
    assert "deg" in lines[-1] and "% leg length" in lines[-1]
    assert "Settings side by side" in evaluation_report.markdown(ev)
