"""Evaluation tables: `compute` on hand-built records with known answers."""

import json

import numpy as np
import pytest

from gengait_jax import baselines, evaluation

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
