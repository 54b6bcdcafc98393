"""Detection outputs: report.png (curves vs twin vs normative band, z bar chart) and twin.csv.

The figure reads like a clinical gait report: one row per joint, one column per channel (plane),
x = % of the gait cycle. Each joint is drawn on the strides of its own side when the stride sides
are known (a right-knee curve on right strides), with the normative mean +/- 2 SD in grey, the
input in blue (thin: each stride, thick: their mean) and the twin with its +/- 2 SD band in
orange. Flagged joints get a red title and frame, joints that could not be scored are greyed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

from tfds_gait import joints as joints_lib  # noqa: E402
from tfds_gait import normative  # noqa: E402
from tfds_gait import skeleton  # noqa: E402

RED, BLUE, ORANGE, GREY = "#c62828", "#1f5fa8", "#ef6c00", "#9e9e9e"


def _strides_for(joint: str, sides) -> tuple[np.ndarray | None, str]:
    """Indices of the strides to draw a joint on (its own side if known) and that side."""
    if sides is None:
        return None, "*"
    sides = np.asarray(sides).astype(str)
    own = joint[:1]
    if own in ("L", "R") and (sides == own).any():
        return np.flatnonzero(sides == own), own
    return None, "*" if len(set(sides.tolist())) != 1 else sides[0]


def _band(ax, x, lo, hi, color, alpha, label=None):
    """fill_between that skips NaN points."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(x, np.where(ok, lo, 0), np.where(ok, hi, 0), where=ok, color=color,
                        alpha=alpha, lw=0, label=label)


def _panel(ax, pct, xs_ntc, tw_ntc, sd_ntc, norm, c: int, show_twin: bool):
    """One joint x channel panel."""
    if norm is not None:
        m, s = norm[0][:, c], norm[1][:, c]
        _band(ax, pct, m - 2 * s, m + 2 * s, GREY, 0.3, "normative mean ± 2 SD")
        ax.plot(pct, m, color=GREY, lw=0.8, ls="--")
    for x in xs_ntc[..., c]:
        ax.plot(pct, x, color=BLUE, lw=0.6, alpha=0.35)
    with np.errstate(invalid="ignore"), _quiet():
        ax.plot(pct, np.nanmean(xs_ntc[..., c], 0), color=BLUE, lw=1.8, label="input")
        if show_twin:
            t, s = np.nanmean(tw_ntc[..., c], 0), np.sqrt(np.nanmean(sd_ntc[..., c] ** 2, 0))
            _band(ax, pct, t - 2 * s, t + 2 * s, ORANGE, 0.25)
            ax.plot(pct, t, color=ORANGE, lw=1.8, label="normative twin ± 2 SD")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences all-NaN mean warnings (frames invalid in every stride stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _style(ax, title: str, flagged: bool, scored: bool):
    """Red title and frame for a flagged joint, grey face for a joint not scored."""
    ax.set_title(title, fontsize=8.5, color=RED if flagged else ("#616161" if not scored
                                                                  else "black"),
                 fontweight="bold" if flagged else "normal", loc="left")
    if flagged:
        for sp in ax.spines.values():
            sp.set_color(RED)
            sp.set_linewidth(2.0)
    if not scored:
        ax.set_facecolor("#ececec")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25, lw=0.5)


def _bars(ax, names, z, flagged, threshold: float, k: int):
    """Per-joint z bar chart with the threshold line; 'not scored' where z is NaN."""
    pos = np.arange(len(names))
    zz = np.nan_to_num(z, nan=0.0)
    colors = [RED if f else (BLUE if v >= 0 else "#b0bec5") for f, v in zip(flagged, zz)]
    ax.bar(pos, zz, color=colors, width=0.65)
    for i in np.flatnonzero(~np.isfinite(z)):
        ax.text(i, 0.1, "not\nscored", ha="center", va="bottom", fontsize=7, color="#616161")
    ax.axhline(threshold, color=RED, ls="--", lw=1.2)
    ax.text(len(names) - 0.5, threshold, f" flag threshold z = {threshold:.2f}\n"
            f" (median over {k} stride(s))", color=RED, fontsize=7.5, va="center", ha="left")
    ax.axhline(0, color="black", lw=0.6)
    top = max(threshold, float(np.nanmax(zz, initial=0.0))) * 1.15 + 0.3
    ax.set_ylim(min(-1.0, float(np.nanmin(zz, initial=0.0)) * 1.1), top)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(pos, [joints_lib.pretty(n).replace(" ", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("z (median over strides)\n< 0: closer than usual", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot_report(path: str | epath.Path, *, joint_names: Sequence[str], channel_names: Sequence[str],
                units: str, x_ntjc, twin_ntjc, sd_ntjc, z_j, flagged_j, scored_j,
                threshold: float, normative: dict | None, sides=None, title: str = "",
                show_all_twins: bool = False) -> str:
    """Writes the report figure; `normative` maps a stride side ('L','R','*') to (mean, sd)."""
    x, tw, sd = (np.asarray(a, float) for a in (x_ntjc, twin_ntjc, sd_ntjc))
    n, t, j, c = x.shape
    pct = np.arange(t) * 100.0 / t
    z, flagged, scored = np.asarray(z_j, float), np.asarray(flagged_j, bool), np.asarray(
        scored_j, bool)
    height = 1.75 * j + 4.2
    fig = plt.figure(figsize=(3.4 * c + 1.0, height))
    inch = 1.0 / height  # one inch in figure fractions
    top = 1.0 - 0.85 * inch
    bars = fig.add_gridspec(1, 1, top=top, bottom=top - 2.0 * inch, left=0.07, right=0.87)
    grid = fig.add_gridspec(j, c, top=top - 3.05 * inch, bottom=0.45 * inch, left=0.07,
                            right=0.98, hspace=0.95, wspace=0.25)
    _bars(fig.add_subplot(bars[0, 0]), joint_names, z, flagged, threshold,
          int(np.isfinite(x).any((1, 2, 3)).sum()))
    for jj, name in enumerate(joint_names):
        idx, side = _strides_for(name, sides)
        sel = slice(None) if idx is None else idx
        norm = normative.get(side, normative.get("*")) if normative else None
        norm = None if norm is None else (np.asarray(norm[0])[:, jj], np.asarray(norm[1])[:, jj])
        status = (f"FLAGGED  z = {z[jj]:.1f}" if flagged[jj] else
                  f"z = {z[jj]:.1f}" if scored[jj] else "not scored (too little valid data)")
        on = "" if side == "*" else f", {side} strides"
        for cc in range(c):
            ax = fig.add_subplot(grid[jj, cc])
            _panel(ax, pct, x[sel][:, :, jj], tw[sel][:, :, jj], sd[sel][:, :, jj], norm, cc,
                   show_twin=flagged[jj] or show_all_twins)
            head = f"{joints_lib.pretty(name)} — {status}" if cc == 0 else ""
            _style(ax, f"{head}\n{channel_names[cc]} ({units}{on})" if head else
                   f"\n{channel_names[cc]} ({units})", flagged[jj], scored[jj])
            if jj == j - 1:
                ax.set_xlabel("% gait cycle", fontsize=8)
    handles = {}
    for ax in fig.axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.text(0.01, 1.0 - 0.25 * inch, title, ha="left", va="top", fontsize=10)
    fig.legend(handles.values(), handles.keys(), loc="upper left", fontsize=8.5, ncol=3,
               frameon=False, bbox_to_anchor=(0.06, 1.0 - 0.42 * inch))
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return str(path)


def plot_sagittal(path: str | epath.Path, *, x_ntjc, twin_ntjc, sides, flagged_j,
                  joint_names: Sequence[str], title: str) -> str:
    """report_angles.png of a skeleton: per side the hip, knee and ankle sagittal angles
    derived from the segment directions (tfds_gait.skeleton.sagittal_angles) of that side's
    strides, input vs twin (the twin only where a point of that side was flagged)."""
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.4), sharex=True, squeeze=False)
    sides = np.asarray(sides).astype(str)
    pct = np.arange(x_ntjc.shape[1]) * 100.0 / x_ntjc.shape[1]
    for r, side in enumerate(joints_lib.SIDES):
        keep = np.flatnonzero(sides == side) if (sides == side).any() else np.arange(len(sides))
        flagged = any(f and n[:1] == side for n, f in zip(joint_names, flagged_j))
        with np.errstate(invalid="ignore"), _quiet():
            a_in = np.stack([skeleton.sagittal_angles(x, side) for x in x_ntjc[keep]])
            a_tw = np.stack([skeleton.sagittal_angles(x, side) for x in twin_ntjc[keep]])
            for c, name in enumerate(skeleton.SAGITTAL):
                ax = axes[r, c]
                ax.plot(pct, np.nanmean(a_in[..., c], 0), color=BLUE, lw=1.8, label="input")
                if flagged:
                    ax.plot(pct, np.nanmean(a_tw[..., c], 0), color=ORANGE, lw=1.6, ls="--",
                            label="normative twin")
                ax.set_title(f"{'left' if side == 'L' else 'right'} {name} (deg, {side} strides)",
                             fontsize=9, color=RED if flagged else "black")
                ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("% gait cycle", fontsize=8)
    axes[0, 0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{title}\nsagittal angles from the skeleton's segments (hip: thigh to the "
                 "vertical, no pelvis tilt)", fontsize=9)
    fig.tight_layout()
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return str(path)


def normative_curves(meta: dict, cal: dict | None) -> tuple[dict, str]:
    """Stride side -> (mean, sd) [T, J, C] of the report's grey band, and where it comes from.

    Published norms (tfds_gait.normative, per the joint's own cycle) when they exist for the
    joints: for a stride of side S the other side's joints are half a cycle later (rolled by
    T/2). Else the calibration's healthy reference curves, else the flat training mean/SD."""
    names, t = list(meta["joint_names"]), int(meta["num_frames"])
    mean = sd = None
    if meta.get("modality", "angles") == "angles":
        mean, sd = (np.asarray(a, float) for a in normative.normative_band(names, num_points=t))
    if mean is not None and np.isfinite(mean).any():
        out = {"*": (mean, sd)}
        for side in ("L", "R"):
            other = np.array([n[:1] not in (side, "") for n in names])
            roll = lambda a: np.where(other[None, :, None], np.roll(a, t // 2, axis=0), a)
            out[side] = (roll(mean), roll(sd))
        return out, "published normative data (Schwartz 2008)"
    ref = (cal or {}).get("reference") or {}
    if ref:
        return ({k: (np.asarray(v["mean"], float), np.asarray(v["sd"], float))
                 for k, v in ref.items()},
                f"healthy calibration strides ({ref.get('*', {}).get('n_strides', '?')})")
    m, s = (np.asarray(meta["stats"][k], float) for k in ("mean", "std"))
    return {"*": (np.broadcast_to(m, (t,) + m.shape), np.broadcast_to(s, (t,) + s.shape))}, \
        "training mean/SD (not per gait phase)"


def write_twin_csv(path: str | epath.Path, *, joint_names, channel_names, x_ntjc, twin_ntjc, sd_ntjc,
                   sides=None) -> str:
    """Long format: stride, side, joint, channel, pct, input, twin, twin_sd."""
    x, tw, sd = (np.asarray(a, float) for a in (x_ntjc, twin_ntjc, sd_ntjc))
    n, t, j, c = x.shape
    fmt = lambda v: "" if not np.isfinite(v) else f"{v:.4f}"
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["stride", "side", "joint", "channel", "pct", "input", "twin", "twin_sd"])
    for i in range(n):
        side = "" if sides is None else str(sides[i])
        for jj, name in enumerate(joint_names):
            for cc, ch in enumerate(channel_names):
                for tt in range(t):
                    w.writerow([i, side, name, ch, round(tt * 100 / t, 2), fmt(x[i, tt, jj, cc]),
                                fmt(tw[i, tt, jj, cc]), fmt(sd[i, tt, jj, cc])])
    epath.Path(path).write_text(buf.getvalue())
    return str(path)
