"""report.html: ONE self-contained page (inline SVG, no script, no network) a person reads.

Order: the decision (flagged joints with their z, the threshold and how many strides it rests
on), the notes, the z bars, the joint x gait-phase anomaly map, then per joint its curves
(input mean, normative twin with its band where the twin replaced it, the normative band),
and the model and calibration ids.
"""

from __future__ import annotations

import html
import warnings
from typing import Sequence

import numpy as np
from etils import epath

from tfds_gait import joints as joints_lib

RED, BLUE, ORANGE, GREY = "#c62828", "#1f5fa8", "#ef6c00", "#9e9e9e"
_CSS = """body{font-family:system-ui,Arial,sans-serif;margin:24px;color:#212121;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}.flag{color:#c62828;font-weight:bold}
.ok{color:#2e7d32;font-weight:bold}table{border-collapse:collapse}td,th{padding:3px 8px;
border-bottom:1px solid #ddd;text-align:left;font-size:13px}.joint{display:inline-block;
margin:6px 10px 6px 0;vertical-align:top}.small{font-size:12px;color:#616161}"""


def _mean(a, axis=0):
    """nanmean without the all-NaN warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _path(xs, ys, w, h, lo, hi) -> str:
    """SVG path of a curve (NaN gaps break it), y range lo..hi mapped to h..0."""
    out, pen = [], "M"
    for x, y in zip(xs, ys):
        if not np.isfinite(y):
            pen = "M"
            continue
        out.append(f"{pen}{x * w:.1f},{h - (y - lo) / (hi - lo + 1e-9) * h:.1f}")
        pen = "L"
    return " ".join(out)


def _band(xs, lo_c, hi_c, w, h, lo, hi, color, opacity) -> str:
    """A filled band between two curves (finite part only)."""
    ok = np.isfinite(lo_c) & np.isfinite(hi_c)
    if not ok.any():
        return ""
    pts = [(x, y) for x, y, k in zip(xs, hi_c, ok) if k] + [
        (x, y) for x, y, k in zip(xs[::-1], lo_c[::-1], ok[::-1]) if k]
    d = " ".join(f"{x * w:.1f},{h - (y - lo) / (hi - lo + 1e-9) * h:.1f}" for x, y in pts)
    return f'<polygon points="{d}" fill="{color}" fill-opacity="{opacity}" stroke="none"/>'


def _chart(title: str, x_t, twin_t, sd_t, norm, replaced: bool, flagged: bool,
           w: int = 300, h: int = 120) -> str:
    """One joint x channel panel as inline SVG."""
    xs = np.linspace(0, 1, len(x_t))
    vals = [x_t, twin_t + 2 * sd_t, twin_t - 2 * sd_t]
    if norm is not None:
        vals += [norm[0] + 2 * norm[1], norm[0] - 2 * norm[1]]
    finite = np.concatenate([np.asarray(v)[np.isfinite(v)] for v in vals] + [np.zeros(1)])
    lo, hi = float(finite.min()), float(finite.max())
    lo, hi = lo - 0.05 * (hi - lo + 1), hi + 0.05 * (hi - lo + 1)
    parts = [f'<svg width="{w}" height="{h + 18}" viewBox="0 -14 {w} {h + 18}" role="img">',
             f'<rect x="0" y="0" width="{w}" height="{h}" fill="white" stroke='
             f'"{RED if flagged else "#bdbdbd"}" stroke-width="{2 if flagged else 1}"/>',
             f'<text x="2" y="-3" font-size="11">{html.escape(title)}</text>']
    if norm is not None:
        parts.append(_band(xs, norm[0] - 2 * norm[1], norm[0] + 2 * norm[1], w, h, lo, hi,
                           GREY, 0.3))
    if replaced:
        parts.append(_band(xs, twin_t - 2 * sd_t, twin_t + 2 * sd_t, w, h, lo, hi, ORANGE,
                           0.25))
        parts.append(f'<path d="{_path(xs, twin_t, w, h, lo, hi)}" stroke="{ORANGE}" '
                     f'stroke-width="2" fill="none"/>')
    parts.append(f'<path d="{_path(xs, x_t, w, h, lo, hi)}" stroke="{BLUE}" stroke-width="2" '
                 f'fill="none"/>')
    parts.append("</svg>")
    return "".join(parts)


def _bars(names, z, flagged, threshold: float, w: int = 1000, h: int = 160) -> str:
    """The z bar chart with the threshold line."""
    zz = np.nan_to_num(np.asarray(z, float), nan=0.0)
    top = max(threshold * 1.15, float(zz.max(initial=0)) * 1.1, 1.0)
    bottom = min(-1.0, float(zz.min(initial=0)) * 1.1)
    y = lambda v: h - (v - bottom) / (top - bottom) * h
    bw = w / len(names)
    parts = [f'<svg width="{w}" height="{h + 34}" role="img" aria-label="z per joint">']
    for i, (name, v, f) in enumerate(zip(names, zz, flagged)):
        color = RED if f else (BLUE if v >= 0 else "#b0bec5")
        y0, y1 = sorted((y(0), y(v)))
        parts.append(f'<rect x="{i * bw + bw * 0.15:.1f}" y="{y0:.1f}" width="{bw * 0.7:.1f}" '
                     f'height="{max(y1 - y0, 0.5):.1f}" fill="{color}"/>')
        label = "not scored" if not np.isfinite(np.asarray(z, float)[i]) else f"{v:.1f}"
        parts.append(f'<text x="{i * bw + bw / 2:.1f}" y="{h + 14}" font-size="11" '
                     f'text-anchor="middle">{html.escape(joints_lib.pretty(name))}</text>'
                     f'<text x="{i * bw + bw / 2:.1f}" y="{h + 28}" font-size="10" '
                     f'text-anchor="middle" fill="#616161">{label}</text>')
    parts.append(f'<line x1="0" x2="{w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                 f'stroke="{RED}" stroke-dasharray="6,4"/><text x="{w - 4}" '
                 f'y="{y(threshold) - 4:.1f}" font-size="11" fill="{RED}" text-anchor="end">'
                 f'threshold z = {threshold:.2f}</text>')
    parts.append(f'<line x1="0" x2="{w}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="black"/></svg>')
    return "".join(parts)


def _heatmap(names, map_tj, threshold: float, w: int = 1000, row: int = 18) -> str:
    """Joint x gait-phase anomaly map (shape z per phase, each joint's own cycle)."""
    m = np.nan_to_num(np.asarray(map_tj, float), nan=0.0)
    t, j = m.shape
    cw = (w - 130) / t
    parts = [f'<svg width="{w}" height="{row * j + 24}" role="img" aria-label="anomaly map">']
    for jj, name in enumerate(names):
        parts.append(f'<text x="0" y="{jj * row + 13}" font-size="11">'
                     f'{html.escape(joints_lib.pretty(name))}</text>')
        for tt in range(t):
            level = float(np.clip(m[tt, jj] / max(threshold, 1e-6), 0, 1.5)) / 1.5
            color = f"rgb(255,{int(255 * (1 - level))},{int(255 * (1 - level))})"
            parts.append(f'<rect x="{130 + tt * cw:.1f}" y="{jj * row}" width="{cw + 0.3:.1f}"'
                         f' height="{row - 2}" fill="{color}"/>')
    for pct in (0, 25, 50, 75, 100):
        parts.append(f'<text x="{130 + pct / 100 * t * cw:.1f}" y="{row * j + 14}" '
                     f'font-size="10" text-anchor="middle">{pct} %</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curves(i_sel, a):
    """Mean over the selected strides of a [N, T, C] joint array."""
    return _mean(a[i_sel], axis=0)


def write(path: str | epath.Path, *, scores: dict, map_tj, title: str, joint_names: Sequence[str],
          channel_names: Sequence[str], units: str, x_ntjc, twin_ntjc, sd_ntjc, z_j,
          flagged_j, scored_j, threshold: float, normative: dict | None, sides=None) -> str:
    """Writes report.html; returns its path."""
    x, tw, sd = (np.asarray(a, float) for a in (x_ntjc, twin_ntjc, sd_ntjc))
    sides = np.asarray(sides if sides is not None else [""] * len(x)).astype(str)
    flagged = [n for n, f in zip(joint_names, flagged_j) if f]
    th = scores["threshold"]
    decision = ('<p class="flag">Flagged: ' + ", ".join(
        f'{html.escape(joints_lib.pretty(n))} (z {scores["joints"][n]["z"]:.1f})'
        for n in flagged) + "</p>") if flagged else '<p class="ok">Flagged: none</p>'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in scores["notes"])
    body = [f"<h1>{html.escape(title.split(':')[0])}</h1>", decision,
            f'<p>{scores["n_strides"]} stride(s) ({", ".join(f"{sides.tolist().count(s)} {s}" for s in ("L", "R") if s in sides) or "sides unknown"}); '
            f'flag threshold z &gt; {th["z"]:.2f} for {th["strides"]} stride(s), calibrated '
            f'on {th["calibration_strides"]} out-of-fold healthy strides so that a healthy '
            f'trial gets any flag with probability {100 * th["alpha"]:.0f} %'
            + ('; once one joint is above it, every joint above its own healthy '
               f'{100 * (1 - th["joint_alpha"]):.0f} % level is flagged too'
               if th.get("joint_alpha") else "")
            + (f' ({100 * (1 - th["chain_alpha"]):.0f} % next to it on the kinematic chain)'
               if th.get("joint_alpha") and th.get("chain_alpha") else "") + '.</p>',
            f"<ul>{notes}</ul>" if notes else "",
            "<h2>z per joint</h2>", _bars(joint_names, z_j, flagged_j, threshold),
            "<h2>Where in the gait cycle (anomaly map, each joint's own cycle)</h2>",
            _heatmap(joint_names, map_tj, threshold), "<h2>Curves: input (blue), normative "
            "twin &plusmn; 2 SD (orange, where it replaces the input), normative band "
            "(grey)</h2>"]
    for jj, name in enumerate(joint_names):
        own = name[:1]
        sel = np.flatnonzero(sides == own) if own in ("L", "R") and (sides == own).any() \
            else np.arange(len(x))
        side = own if own in ("L", "R") and (sides == own).any() else "*"
        norm = (normative or {}).get(side, (normative or {}).get("*"))
        status = ("FLAGGED " if flagged_j[jj] else "") + (
            f"z = {z_j[jj]:.1f}" if scored_j[jj] else "not scored")
        cells = []
        for c, ch in enumerate(channel_names):
            nm = None if norm is None else (np.asarray(norm[0])[:, jj, c],
                                            np.asarray(norm[1])[:, jj, c])
            cells.append('<div class="joint">' + _chart(
                f"{ch} ({units})", _curves(sel, x[:, :, jj, c]), _curves(sel, tw[:, :, jj, c]),
                np.sqrt(_curves(sel, sd[:, :, jj, c] ** 2)), nm,
                bool(np.nanmax(sd[sel][:, :, jj, c], initial=0) > 0), bool(flagged_j[jj]))
                + "</div>")
        cls = "flag" if flagged_j[jj] else ""
        body.append(f'<h2 class="{cls}">{html.escape(joints_lib.pretty(name))} — {status}</h2>'
                    + "".join(cells))
    body.append(f'<p class="small">{html.escape(title)}<br>model {html.escape(str(scores["model_id"]))}'
                f', calibration {html.escape(scores["calibration_id"])}; input '
                f'{html.escape(scores["input"])}</p>')
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>GenGait '
            f'report</title><style>{_CSS}</style></head><body>{"".join(body)}</body></html>')
    epath.Path(path).write_text(page, encoding="utf-8")
    return str(path)
