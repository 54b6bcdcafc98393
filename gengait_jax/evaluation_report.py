"""Renders an evaluation dict (from `evaluation.compute`) as markdown tables and PNG plots."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

ALL = "all abnormalities"


def fmt(x: Any, digits: int = 2) -> str:
    """A number for a table cell ('-' when missing)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, float) and 0 < abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def min_p_note(n_subjects: int | None) -> str:
    """Reminder of the smallest two-sided subject-level Wilcoxon p that n subjects allow."""
    if not n_subjects or n_subjects > 10:
        return ""
    return (f" With {n_subjects} subjects the smallest attainable subject-level p is "
            f"{2.0 ** (1 - n_subjects):.2g}: stride-level p-values treat strides of one person "
            f"as independent and overstate the evidence.")


def in_units(text: str, ev: dict) -> str:
    """The report's deviations are written in degrees; a skeleton model's are in its units
    (setting.units, e.g. % leg length): the unit word swapped (the JSON keys keep `_deg`)."""
    units = ev.get("setting", {}).get("units", "deg")
    return text if units == "deg" else text.replace("(deg)", f"({units})").replace(
        " deg", f" {units}")


def _groups(ev: dict) -> dict[str, dict]:
    """The overall table first, then one per abnormality."""
    return {ALL: ev, **ev.get("per_abnormality", {})}


def summary_table(ev: dict) -> str:
    """One row per abnormality: localization and correction, GenGait vs baselines."""
    head = ("| abnormality | strides / subjects | top-1 GenGait | top-1 GVS z | top-1 envelope"
            " | top-1 chance | AUROC GenGait | AUROC GVS z | before (deg) | twin after (deg)"
            " | pop. mean after (deg) | p (Wilcoxon) | r | d_z |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, t in _groups(ev).items():
        loc, cor, b = t["localization"], t["correction"], t["baselines"]
        rows.append("| " + " | ".join([
            name, f"{t['n_strides']} / {t['n_subjects']}", fmt(loc["top1_accuracy"]),
            fmt(b["zscore"]["top1_accuracy"]), fmt(b["envelope"]["top1_accuracy"]),
            fmt(b["chance"]["top1_accuracy"]), fmt(loc["auroc"]), fmt(b["zscore"]["auroc"]),
            fmt(cor["deviation_before_deg"]), fmt(cor["deviation_after_deg"]),
            fmt(b["population_mean"]["deviation_after_deg"]), fmt(cor["p_value"], 3),
            fmt(cor["effect_size"]), fmt(cor["cohens_dz"])]) + " |")
    return in_units("\n".join(rows), ev)


def group_table(t: dict) -> str:
    """GenGait vs each baseline on one group of strides (localization + correction)."""
    loc, b, cor = t["localization"], t["baselines"], t["correction"]
    head = ("| method | top-1 | top-3 | AUROC | precision | recall | F1 | false flags on clean"
            " strides | deviation after (deg) |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]

    def row(name, d, dev):
        rows.append("| " + " | ".join([name] + [fmt(d.get(k)) for k in (
            "top1_accuracy", "top3_accuracy", "auroc", "precision", "recall", "f1",
            "false_flag_rate")] + [fmt(dev)]) + " |")

    row("GenGait (z-scores, twin)", loc, cor["deviation_after_deg"])
    row("GVS z-score (z > 2)", b["zscore"], None)
    row("+/-2 SD envelope (> 20 % of cycle)", b["envelope"], None)
    row("population mean on GenGait flags", {}, b["population_mean"]["deviation_after_deg"])
    row("chance", b["chance"], None)
    lines = [
        "\n".join(rows), "",
        f"Rests on {t['n_strides']} perturbed strides of {t['n_subjects']} subjects "
        f"(false flags: {loc.get('n_clean_strides')} clean strides of "
        f"{loc.get('n_clean_subjects')} subjects).",
        f"Deviation of the affected joints from the subject's own clean stride: "
        f"{fmt(cor['deviation_before_deg'])} deg before -> {fmt(cor['deviation_after_deg'])} deg "
        f"after (twin), {fmt(b['population_mean']['deviation_after_deg'])} deg with the population "
        f"mean; Wilcoxon p = {fmt(cor['p_value'], 3)} (per-subject means: "
        f"p = {fmt(cor.get('subject_p_value'), 3)}), rank-biserial r = {fmt(cor['effect_size'])}, "
        f"d_z = {fmt(cor['cohens_dz'])}." + min_p_note(cor.get("n_subjects")),
        f"Preservation: unaffected joints change by {fmt(t['preservation']['rms_change_deg'])} deg "
        f"RMS between input and twin."]
    if "correction_oracle_flags" in t:
        o = t["correction_oracle_flags"]
        lines.append(f"With the true joints withheld (oracle flags): twin "
                     f"{fmt(o['deviation_after_deg'])} deg vs population mean "
                     f"{fmt(b['population_mean']['oracle_deviation_after_deg'])} deg.")
    return "\n".join(lines)


def verdicts(ev: dict) -> list[str]:
    """Plain sentences for every group where GenGait does NOT beat a baseline."""
    out = []
    for name, t in _groups(ev).items():
        loc, b, cor = t["localization"], t["baselines"], t["correction"]
        for base in ("zscore", "envelope", "chance"):
            g, o = loc["top1_accuracy"], b[base]["top1_accuracy"]
            if g is not None and o is not None and g <= o:
                out.append(f"{name}: GenGait top-1 {fmt(g)} does not beat {base} {fmt(o)}.")
        g, o = cor["deviation_after_deg"], b["population_mean"]["deviation_after_deg"]
        if g is not None and o is not None and g >= o:
            out.append(f"{name}: the twin ({fmt(g)} deg) is not closer to the subject's clean "
                       f"stride than the population mean ({fmt(o)} deg).")
    return out


def markdown(ev: dict) -> str:
    """The whole report: setting, summary table, one table per abnormality, shortfalls."""
    s = ev.get("setting", {})
    parts = ["# GenGait evaluation", "",
             "Setting: " + ", ".join(f"{k} = {v}" for k, v in s.items() if not isinstance(
                 v, (list, dict))), "", "## Summary", "", summary_table(ev), ""]
    for name, t in _groups(ev).items():
        parts += [f"## {name}", "", group_table(t), ""]
    bad = verdicts(ev)
    parts += ["## Where GenGait does not beat a baseline", ""]
    parts += [f"- {v}" for v in bad] or ["- none: GenGait beats every baseline in every row."]
    text = in_units("\n".join(parts) + "\n", ev)
    if ev.get("other_settings"):
        text += "\n## Settings side by side (severity 1.0)\n\n" + compare_table(ev) + "\n"
    for other in ev.get("other_settings", []):
        o = other.get("setting", {})
        more = ["", f"# Second setting: {o.get('data_name')} / {o.get('split')} "
                    f"({o.get('modality', 'angles')})", "",
                "Setting: " + ", ".join(f"{k} = {v}" for k, v in o.items()
                                        if not isinstance(v, (list, dict))), "",
                summary_table(other), ""]
        more += [f"- {v}" for v in verdicts(other)]
        text += in_units("\n".join(more) + "\n", other)
    return text


def compare_table(ev: dict, severity: str = "1") -> str:
    """The headline figures of this setting and the --compare_workdir ones, one column each
    (the same held-out strides and abnormality draws when both read the same split)."""
    settings = [ev] + list(ev.get("other_settings", []))
    trial = lambda e, k: fmt(e["trials_per_severity"][severity][k])
    rows = [("top-1 trial / stride", lambda e: "{} / {}".format(
                trial(e, "top1_accuracy"),
                fmt(e["per_severity"][severity]["localization"]["top1_accuracy"]))),
            ("top-1 chance (stride)", lambda e: fmt(e["per_severity"][severity]["baselines"][
                "chance"]["top1_accuracy"])),
            ("AUROC trial", lambda e: trial(e, "auroc")),
            ("flag recall / precision (trial)", lambda e: "{} / {}".format(
                trial(e, "recall"), trial(e, "precision"))),
            ("clean trials flagged", lambda e: fmt(e["trials"]["false_flag_rate"])),
            ("twin before -> after, own flags", lambda e: "{} -> {} {}".format(
                fmt(e["per_severity"][severity]["correction"]["deviation_before_deg"]),
                fmt(e["per_severity"][severity]["correction"]["deviation_after_deg"]),
                e.get("setting", {}).get("units", "deg")))]
    head = "| | " + " | ".join(f"{e.get('setting', {}).get('modality', 'angles')} "
                                f"({e.get('setting', {}).get('model_id')})" for e in settings)
    out = [head + " |", "|---" * (len(settings) + 1) + "|"]
    for name, get in rows:
        out.append(f"| {name} | " + " | ".join(_safe(get, e) for e in settings) + " |")
    return "\n".join(out)


def _safe(get, ev: dict) -> str:
    """A compare_table cell ('-' where the setting lacks the figure)."""
    try:
        return get(ev)
    except (KeyError, TypeError):
        return "-"


def plots(ev: dict, out_dir: epath.Path) -> list[str]:
    """Bar charts per abnormality: deviation before/after and top-1 accuracy; returns paths."""
    groups = _groups(ev)
    names = list(groups)
    x = np.arange(len(names))
    nz = lambda v: np.nan if v is None else v
    paths = []
    series = {
        "deviation": [("before", lambda t: t["correction"]["deviation_before_deg"]),
                      ("twin (GenGait)", lambda t: t["correction"]["deviation_after_deg"]),
                      ("population mean", lambda t: t["baselines"]["population_mean"][
                          "deviation_after_deg"])],
        "top1": [("GenGait", lambda t: t["localization"]["top1_accuracy"]),
                 ("GVS z-score", lambda t: t["baselines"]["zscore"]["top1_accuracy"]),
                 ("+/-2 SD envelope", lambda t: t["baselines"]["envelope"]["top1_accuracy"]),
                 ("chance", lambda t: t["baselines"]["chance"]["top1_accuracy"])]}
    labels = {"deviation": in_units("RMS deviation from own clean stride (deg)", ev),
              "top1": "top-1 localization accuracy"}
    for key, ser in series.items():
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
        w = 0.8 / len(ser)
        for i, (label, get) in enumerate(ser):
            ax.bar(x + (i - (len(ser) - 1) / 2) * w, [nz(get(groups[n])) for n in names], w,
                   label=label)
        ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
        ax.set_ylabel(labels[key])
        ax.legend(fontsize=8)
        ax.set_title(f"{labels[key]} (n = {ev['n_strides']} strides, "
                     f"{ev['n_subjects']} subjects)", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=110, format="png")
        plt.close(fig)
        path = epath.Path(out_dir) / f"evaluation_{key}.png"
        path.write_bytes(buf.getvalue())
        paths.append(str(path))
    return paths
