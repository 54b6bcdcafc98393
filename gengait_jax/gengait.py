"""`GenGait`, the inference front door: a trained model and its calibration, both passes.

  gg = GenGait.from_workdir("runs/demo")        # model parameters only + calibration.json
  result = gg.detect("trial.c3d")               # pass 1, trial decision, pass 2
  result.write("out/")                          # scores.json twin.npz twin.csv report.png/html
  print(result.summary())

The steps are methods too (`pass1`, `decide`, `withheld`, `twin`), on `data.Strides`, so that
detect, evaluate, the calibration and the benchmarks run the same code. Never imports training.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import ml_collections
import numpy as np
from etils import epath

from gengait_jax import calibration, checkpointing, data, inputs, report, report_html
from gengait_jax import scoring, twin as twin_lib
from gengait_jax.workdir import Workdir, write_json, write_npz
from tfds_gait import joints as joints_lib, skeleton
from tfds_gait.errors import GaitDataError


@dataclasses.dataclass(frozen=True)
class Pass1:
    """Pass 1 of N strides: reconstructions, residuals and (when calibrated) per-stride z."""

    recon: np.ndarray        # [N, T, J, C] joint j reconstructed with j hidden
    residual: np.ndarray     # [N, T, J, C] observed - recon (NaN: invalid / not scored)
    scored: np.ndarray       # [N, J] bool
    valid_frac: np.ndarray   # [N, J]
    z: np.ndarray | None = None      # [N, J] one-stride joint z
    flags: np.ndarray | None = None  # [N, J] one-stride flags

    @property
    def rms(self) -> np.ndarray:
        """[N, J] RMS residual (physical units)."""
        if not self.residual.size:
            return np.zeros(self.residual.shape[:1] + self.residual.shape[2:3])
        with warnings.catch_warnings():  # a joint not scored: NaN, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.sqrt(np.nanmean(self.residual ** 2, axis=(1, 3)))


@dataclasses.dataclass(frozen=True)
class Decision:
    """The trial decision over all its strides."""

    z: np.ndarray            # [J] joint z (NaN: not scored)
    flagged: np.ndarray      # [J] bool
    threshold: float         # z threshold for k strides
    k: int                   # strides it rests on
    map: np.ndarray          # [T, J] anomaly map (shape z per phase, each joint's own cycle)
    offset_z: np.ndarray     # [J, C]
    shape_z: np.ndarray      # [J, C]
    asym_z: np.ndarray       # [J, C] left - right z where it counts (NaN elsewhere)
    joint_threshold: np.ndarray | None  # [J] a joint's own threshold once the trial is
                                        # flagged: its joint_alpha level, or chain_alpha next
                                        # to a family-wise flagged joint (None: family-wise
                                        # flags only)
    misfit: float            # removed from every joint z: the rule's weight x the trial's
                             # percentile of its joint z (calibration._misfit)
    asym_offset_z: np.ndarray  # [J, C] left - right offset z where it counts


class GenGait:
    """A trained GenGait model with its calibration (see the module docstring)."""

    def __init__(self, model, meta: dict, cal: dict | None = None,
                 cfg: ml_collections.ConfigDict | None = None):
        self.model, self.meta, self.calibration = model, meta, cal
        self.cfg = cfg or ml_collections.ConfigDict()
        _check_calibrates(cal, meta, "calibration.json")

    @classmethod
    def from_workdir(cls, workdir: str | Workdir, *, calibrated: bool = True,
                     step: int | None = None) -> "GenGait":
        """Restores the model parameters (no optimizer state) and, if asked, the calibration
        (the cheap JSON checks first, then the checkpoint)."""
        wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
        wd.require()
        meta = wd.meta()
        cal = wd.calibration() if calibrated else None
        _check_calibrates(cal, meta, wd.file("calibration.json"))  # before the restore
        model, cfg, meta = checkpointing.restore_model(wd, step)
        return cls(model, meta, cal, cfg)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.meta["joint_names"])

    @property
    def _twin_cfg(self) -> ml_collections.ConfigDict:
        return self.cfg.get("twin") or ml_collections.ConfigDict(
            dict(withhold="phase", num_samples=twin_lib.NUM_SAMPLES, phase_margin=1.0,
                 dilate=1))

    @property
    def own_phase(self) -> bool:
        """Whether the model reads strides with every joint in its own cycle."""
        return self.cfg.get("model", {}).get("layout", "stride") == "own_phase"

    def _to_model(self, strides: data.Strides) -> data.Strides:
        """Strides in the model's layout."""
        return data.own_phase(strides) if self.own_phase else strides

    def _from_model(self, a: np.ndarray, strides: data.Strides) -> np.ndarray:
        """A per-stride array of the model's layout back in the strides' layout."""
        return data.to_own_phase(a, strides.side, self.joint_names, inverse=True) \
            if self.own_phase else a

    # ------------------------------------------------------------------ pass 1
    def pass1(self, strides: data.Strides) -> Pass1:
        """Every joint hidden in turn and reconstructed; calibrated z and flags if possible."""
        self._check_sides(strides)
        m = self._to_model(strides)
        p1 = scoring.score_strides(self.model, m.x, m.valid)
        recon, residual = (self._from_model(a, strides) for a in (p1.recon_ntjc,
                                                                 p1.residual_ntjc))
        z = flags = None
        if self.calibration is not None:
            sc = calibration.score(residual, strides.side, self.calibration, strides.x)
            z, flags = sc["joint"], sc["flags"]
        return Pass1(recon, residual, p1.scored_nj, p1.valid_frac_nj, z, flags)

    def decide(self, strides: data.Strides, p1: Pass1 | None = None) -> Decision:
        """The trial decision over all strides of `strides` (one recording, both sides)."""
        self._require_calibration()
        p1 = self.pass1(strides) if p1 is None else p1
        return self.decide_residual(strides, p1.residual)

    def decide_residual(self, strides: data.Strides, residual_ntjc: np.ndarray) -> Decision:
        """The trial decision from the strides' pass-1 residuals; a joint flagged only by its
        own two-stage threshold is kept only if it stays above it when pass 1 is repeated with
        the family-wise flagged joints withheld from the body context (`calibration.confirm`):
        an abnormal joint in the context leaks into its neighbours' reconstructions."""
        self._check_sides(strides)
        d = calibration.decide(residual_ntjc, strides.side, self.calibration, strides.x)
        primary = calibration.above(d["z"], d["threshold"])
        secondary = d["flagged"] & ~primary
        flagged = d["flagged"]
        if secondary.any() and self.cfg.get("calibration", {}).get("confirm", True):
            hide = masking_groups(primary, self.model)
            again = self.pass1(strides.replace(valid=strides.valid & ~hide))
            d2 = calibration.decide(again.residual, strides.side, self.calibration, strides.x)
            flagged = primary | (secondary & calibration.above(d2["z"], d["joint_threshold"]))
        return Decision(d["z"], flagged, d["threshold"], d["k"], d["map"], d["offset_z"],
                        d["shape_z"], d["asym_z"], d["joint_threshold"], d["misfit"],
                        d["asym_offset_z"])

    # ------------------------------------------------------------------ pass 2
    def withheld(self, strides: data.Strides, flagged_j: np.ndarray,
                 map_tj: np.ndarray | None = None, threshold: float | None = None) -> np.ndarray:
        """[N, P, J] tokens (in the model's layout) the twin withholds: every patch of a flagged
        joint ("joint"), or its patches where the anomaly map exceeds the threshold minus
        `twin.phase_margin`, dilated by `twin.dilate` patches ("phase"; all of it when no
        phase does)."""
        t, j, patch = int(self.meta["num_frames"]), len(self.joint_names), self.model.patch
        p = t // patch
        flagged = np.asarray(masking_groups(flagged_j, self.model), bool)
        out = np.broadcast_to(flagged[None, None, :], (len(strides), p, j)).copy()
        tc = self._twin_cfg
        if tc.withhold == "joint" or map_tj is None:
            return out
        level = threshold - float(tc.get("phase_margin", 1.0))
        hot = np.nan_to_num(np.asarray(map_tj, float), nan=-np.inf) > level  # own phase
        for i, side in enumerate(strides.side.astype(str)):
            shift = np.zeros(j, int) if self.own_phase else data.roll_of(self.joint_names,
                                                                         side, t)
            for jj in np.flatnonzero(flagged):
                frames = np.roll(hot[:, jj], -shift[jj]) if hot[:, jj].any() else np.ones(t, bool)
                pat = frames.reshape(p, patch).any(1)
                for _ in range(int(tc.get("dilate", 1))):
                    pat = pat | np.roll(pat, 1) | np.roll(pat, -1)
                out[i, :, jj] = pat
        return out

    def groups_withheld(self, withheld_npj: np.ndarray) -> np.ndarray:
        """[N] how many occlusion groups have a withheld token in each stride."""
        g = np.asarray(self.model.group_j[...])
        w = np.asarray(withheld_npj, bool).any(1)  # [N, J]
        return np.stack([w[:, g == k].any(-1) for k in np.unique(g)], -1).sum(-1)

    def twin(self, strides: data.Strides, withheld_npj: np.ndarray, *,
             keep_observed: bool = True, num_samples: int | None = None) -> twin_lib.Twin:
        """The normative twin with the `withheld` tokens hidden, and its band; with a
        calibration, its healthy prior (`twin_lib.with_healthy_prior`, in each joint's own
        cycle: the contralateral blend unless `twin.contralateral` is False; the healthy error
        SD scaled for the number of groups withheld, `calibration.band_scale`) and, keeping
        the observed values, moved toward them where they are within that healthy error
        (`twin.shrink_window`, `twin_lib.shrink_toward_observed`)."""
        n = self._twin_cfg.num_samples if num_samples is None else num_samples
        m = self._to_model(strides)
        tw = twin_lib.normative_twin(self.model, m.x, m.valid, withheld_npj,
                                     num_samples=int(n), keep_observed=keep_observed)
        if self.calibration is None:
            return _map_twin(lambda a: self._from_model(a, strides), tw)
        own = lambda a: a if self.own_phase else data.to_own_phase(a, strides.side,
                                                                   self.joint_names)
        scale = calibration.band_scale(self.calibration,
                                       self.groups_withheld(withheld_npj))[:, None]
        fusion = self.calibration.get("twin_fusion")
        fusion = calibration.fusion_weights(fusion, scale) \
            if fusion is not None and self._twin_cfg.get("contralateral", True) else None
        tw = twin_lib.with_healthy_prior(_map_twin(own, tw), own(m.x),
                                         self.calibration.get("residual_sd"), fusion,
                                         joints_lib.contralateral(self.joint_names), scale)
        if keep_observed:
            tw = twin_lib.shrink_toward_observed(
                tw, own(m.x), int(self._twin_cfg.get("shrink_window", twin_lib.SHRINK_WINDOW)),
                float(self._twin_cfg.get("shrink_scale", twin_lib.SHRINK_SCALE)))
        return _map_twin(lambda a: data.to_own_phase(a, strides.side, self.joint_names,
                                                     inverse=True), tw)

    # ------------------------------------------------------------------ detect
    def detect(self, source: str | data.Strides, *, keep_observed: bool = True,
               num_samples: int | None = None, static: str | None = "auto") -> "DetectResult":
        """Both passes on a file (.c3d / .npz, checked) or on strides; one result object."""
        self._require_calibration()
        if isinstance(source, data.Strides):
            strides, notes, path = source, [], "<strides>"
        else:
            strides, notes = inputs.load(source, self.meta, static)
            path = str(source)
        p1 = self.pass1(strides)
        dec = self.decide(strides, p1)
        withheld = self.withheld(strides, dec.flagged, dec.map, dec.threshold)
        tw = self.twin(strides, withheld, keep_observed=keep_observed, num_samples=num_samples)
        return DetectResult(path, strides, p1, dec, tw, self.meta, self.calibration, notes)

    def _check_sides(self, strides: data.Strides) -> None:
        """Raises unless every stride has a side where the joints have sides (without one, the
        own-cycle layout and the left-right comparisons would be silently wrong)."""
        unknown = int((~np.isin(strides.side.astype(str), ("L", "R"))).sum())
        if unknown and data.sided(self.joint_names):
            raise GaitDataError("<strides>", f"{unknown} of {len(strides)} strides have no "
                                             f"side: {inputs.SIDE_NEEDED}")

    def _require_calibration(self) -> None:
        if self.calibration is None:
            raise GaitDataError("calibration.json", "this GenGait has no calibration: "
                                "calibrate first (python -m launch.detect --calibrate)")


def _check_calibrates(cal: dict | None, meta: dict, path) -> None:
    """A calibration of another model or of another calibration method (an older
    gengait-jax's rules) is an error (recalibrate), never silently applied."""
    if cal is not None and cal.get("model_id") != meta.get("model_id"):
        raise GaitDataError(path, f"calibrates model {cal.get('model_id')}, not "
                                  f"{meta.get('model_id')}: recalibrate (--calibrate)")
    if cal is not None and cal.get("method") != calibration.METHOD:
        raise GaitDataError(path, f"made by an older gengait-jax (method {cal.get('method')!r}, "
                                  f"now {calibration.METHOD!r}): recalibrate (--calibrate)")


def _map_twin(f, tw: twin_lib.Twin) -> twin_lib.Twin:
    """`f` applied to every array of a twin."""
    return twin_lib.Twin(*(f(getattr(tw, fl.name)) for fl in dataclasses.fields(tw)))


def masking_groups(flagged_j, model) -> np.ndarray:
    """Flagged joints extended to their occlusion groups (LPelvis flagged withholds RPelvis)."""
    f = np.asarray(flagged_j, bool)
    g = np.asarray(model.group_j[...])
    return (f[None, :] & (g[:, None] == g[None, :])).any(-1)


def channel_info(meta: dict) -> tuple[list[str], str]:
    """Channel names and units from the meta (angles: the three planes in degrees; positions:
    the body frame's axes in % leg length)."""
    c = int(meta["num_channels"])
    if meta.get("channel_names"):
        return list(meta["channel_names"]), meta.get("units", "")
    if meta.get("modality", "angles") == "angles" and c == len(joints_lib.CHANNELS):
        return list(joints_lib.CHANNELS), meta.get("units", "deg")
    if meta.get("modality") == "positions" and c == len(skeleton.AXES):
        return list(skeleton.AXES), skeleton.UNITS
    return [f"channel {i}" for i in range(c)], meta.get("units", "")


def _statistic_text(rule: dict) -> str:
    """What a joint z is, in words, for a calibration's flag rule (scores.json)."""
    text = "max over the {} channels of the phase-local shape z".format(rule["channels"])
    if rule["offsets"]:
        text += " and offset z"
    if rule.get("asymmetry"):
        text += ", combined with the left - right asymmetry z"
    text += " of the trial's mean residual"
    if rule.get("paired_offsets"):
        text += ("; and a paired joint's offset z combined with its left - right offset z, "
                 "on the side that deviates")
    if rule.get("misfit"):
        text += (", less {:g} x the trial's {:g}th percentile of its joint z (its misfit: a "
                 "person the body prior fits poorly everywhere)").format(
                     rule["misfit"], rule["misfit_quantile"])
    return text


@dataclasses.dataclass(frozen=True)
class DetectResult:
    """What detect found on one input: strides, both passes, the decision, and the outputs."""

    input: str
    strides: data.Strides
    pass1: Pass1
    decision: Decision
    twin: twin_lib.Twin
    meta: dict
    calibration: dict
    notes: list

    @property
    def flagged(self) -> list[str]:
        return [n for n, f in zip(self.meta["joint_names"], self.decision.flagged) if f]

    def scores(self) -> dict:
        """The scores.json content (schema: BUILD_NOTES "Detect")."""
        p1, dec, names = self.pass1, self.decision, list(self.meta["joint_names"])
        channels, units = channel_info(self.meta)
        side = self.strides.side
        rule = self.calibration["flag_rule"]
        joints = {}
        for j, name in enumerate(names):
            scored = bool(np.isfinite(dec.z[j]))
            per_stride = [{"stride": i, "side": str(side[i]) or None,
                           "z": p1.z[i, j], "flagged": bool(p1.flags[i, j]),
                           "rms": p1.rms[i, j],
                           "valid_fraction": round(float(p1.valid_frac[i, j]), 3)}
                          for i in range(len(side))]
            joints[name] = {
                "name": joints_lib.pretty(name), "z": dec.z[j] if scored else None,
                "flagged": bool(dec.flagged[j]), "scored": scored,
                "n_strides_scored": int(np.isfinite(p1.z[:, j]).sum()), "units": units,
                "rms": float(np.nanmedian(p1.rms[:, j])) if scored else None,
                "threshold": None if dec.joint_threshold is None
                or not np.isfinite(dec.joint_threshold[j]) else float(dec.joint_threshold[j]),
                "channels": {ch: {"offset_z": dec.offset_z[j, c], "shape_z": dec.shape_z[j, c],
                                  "asym_z": dec.asym_z[j, c],
                                  "asym_offset_z": dec.asym_offset_z[j, c],
                                  "can_flag": bool(rule["mask"][j][c])}
                             for c, ch in enumerate(channels)},
                "phase_z": np.round(dec.map[:, j], 2), "per_stride": per_stride}
        return {"input": self.input, "model_id": self.meta.get("model_id"),
                "calibration_id": self.calibration["id"], "n_strides": len(side),
                "sides": side.tolist(), "units": units,
                "threshold": {"z": dec.threshold, "alpha": self.calibration["alpha"],
                              "strides": dec.k, "calibrated_for": f"{dec.k} stride(s)",
                              "statistic": _statistic_text(rule),
                              "misfit": dec.misfit,
                              "joint_alpha": self.calibration.get("joint_alpha"),
                              "chain_alpha": self.calibration.get("chain_alpha"),
                              "rule": "a joint is flagged above z; once one is, every joint "
                                      "above its own threshold (joints.*.threshold: its "
                                      "(1 - joint_alpha) healthy level, or (1 - chain_alpha) "
                                      "next to a joint above z on the kinematic chain)"
                              if dec.joint_threshold is not None else
                              "a joint is flagged above z",
                              "calibration_strides": self.calibration["n_strides"]},
                "flagged": self.flagged,
                "not_scored": [n for n, v in joints.items() if not v["scored"]],
                "notes": list(self.notes), "joints": joints}

    def summary(self) -> str:
        """A short human summary."""
        s = self.scores()
        side = [x for x in s["sides"] if x]
        side_txt = "" if not side else " (" + ", ".join(
            f"{side.count(x)} {x}" for x in ("L", "R") if side.count(x)) + ")"
        lines = [f"{s['input']}: {s['n_strides']} stride(s){side_txt}; flag threshold "
                 f"z > {s['threshold']['z']:.2f} (false-flag rate "
                 f"{100 * s['threshold']['alpha']:.0f} % per healthy trial)"]
        lines += [f"  note: {n}" for n in s["notes"]]
        j = s["joints"]
        flagged = sorted(s["flagged"], key=lambda n: -j[n]["z"])
        th = s["threshold"]["z"]
        lines.append("  flagged: " + (", ".join(
            f"{j[n]['name']} (z {j[n]['z']:.1f}" + ("" if j[n]["z"] > th else
                                                   f" > its own {j[n]['threshold']:.1f}") + ")"
            for n in flagged) or "none"))
        if s["not_scored"]:
            lines.append("  not scored (too little valid data): " + ", ".join(
                j[n]["name"] for n in s["not_scored"]))
        return "\n".join(lines)

    def write(self, out_dir: str) -> dict[str, str]:
        """scores.json, twin.npz, twin.csv, report.png and report.html in out_dir (local or
        gs://); a skeleton model also report_angles.png (sagittal angles from the skeleton)."""
        out = epath.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names, tw = list(self.meta["joint_names"]), self.twin
        channels, units = channel_info(self.meta)
        scores = self.scores()
        paths = {"scores": str(write_json(out / "scores.json", scores))}
        paths["twin_npz"] = str(write_npz(
            out / "twin.npz", input=self.strides.x, twin=tw.twin_ntjc, band=tw.sd_ntjc,
            recon=tw.recon_ntjc, valid=self.strides.valid, joint_names=np.array(names),
            channel_names=np.array(channels), flagged=self.decision.flagged,
            side=self.strides.side.astype(str)))
        paths["twin_csv"] = report.write_twin_csv(
            out / "twin.csv", joint_names=names, channel_names=channels,
            x_ntjc=self.strides.x, twin_ntjc=tw.twin_ntjc, sd_ntjc=tw.sd_ntjc,
            sides=self.strides.side)
        norm, source = report.normative_curves(self.meta, self.calibration)
        title = (f"GenGait — {os.path.basename(self.input)}: {len(self.strides)} stride(s); "
                 f"model {self.meta.get('model_id')}, calibration {self.calibration['id']}; "
                 f"grey band: {source}")
        figure = dict(joint_names=names, channel_names=channels, units=units,
                      x_ntjc=self.strides.x, twin_ntjc=tw.twin_ntjc, sd_ntjc=tw.sd_ntjc,
                      z_j=self.decision.z, flagged_j=self.decision.flagged,
                      scored_j=np.isfinite(self.decision.z), threshold=self.decision.threshold,
                      normative=norm, sides=self.strides.side)
        paths["report"] = report.plot_report(out / "report.png", title=title, **figure)
        if self.meta.get("modality") == "positions":
            paths["angles"] = report.plot_sagittal(
                out / "report_angles.png", x_ntjc=self.strides.x, twin_ntjc=tw.twin_ntjc,
                sides=self.strides.side, flagged_j=self.decision.flagged, joint_names=names,
                title=title)
        paths["html"] = report_html.write(out / "report.html", scores=scores,
                                          map_tj=self.decision.map, title=title, **figure)
        return paths
