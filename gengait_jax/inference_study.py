r"""Measurements behind the choices of pass 1, calibration and the twin (BUILD_NOTES figures).

  python -m gengait_jax.inference_study --workdir=runs/demo --healthy=healthy.npz

`healthy.npz` holds held-out healthy strides (`angles` [N,T,J,C], optional `valid`,
`subject`); they are split into calibration and test halves. Perturbations are synthetic and
channel-agnostic: an offset on one joint's first channel, or that channel's excursion scaled
by 0.5 around its mean ("stiff"). Prints one JSON line per study.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from gengait_jax import calibration, metrics, scoring, twin

OFFSET = 10.0


def perturb(x_ntjc: np.ndarray, j: int, kind: str) -> np.ndarray:
    """One joint of every stride perturbed on its first channel."""
    y = x_ntjc.copy()
    ch = y[:, :, j, 0]
    if kind == "offset":
        y[:, :, j, 0] = ch + OFFSET
    else:
        m = np.nanmean(ch, 1, keepdims=True)
        y[:, :, j, 0] = m + 0.5 * (ch - m)
    return y


def pass1_study(model, x_cal, x_test, names, num_context: int) -> dict:
    """Top-1 / AUROC / flag recall per perturbation and healthy FFR for one pass-1 setting."""
    cal = calibration.fit(scoring.score_strides(model, x_cal, num_context=num_context).score_nj,
                          names, max_trial_strides=1)
    t0 = time.time()
    z0 = calibration.zscores(scoring.score_strides(model, x_test, num_context=num_context)
                             .score_nj, cal)
    sec = (time.time() - t0) / len(x_test)
    out = {"num_context": num_context, "healthy_ffr": float(
        calibration.stride_flags(z0, cal).any(-1).mean()), "s_per_stride_incl_compile": sec}
    for kind in ("offset", "stiff"):
        z_all, truth = [], []
        for j in range(len(names)):
            z_all.append(calibration.zscores(scoring.score_strides(
                model, perturb(x_test, j, kind), num_context=num_context).score_nj, cal))
            truth.append(np.broadcast_to(np.arange(len(names)) == j, z_all[-1].shape))
        z, t = np.concatenate(z_all), np.concatenate(truth)
        out[kind] = {"top1": metrics.topk_accuracy(z, t, 1)["value"],
                     "auroc": metrics.joint_auroc(z, t)["value"],
                     "recall": float(calibration.stride_flags(z, cal)[t].mean())}
    return out


def calibration_study(scores: np.ndarray, names, n_cal: int, draws: int, method: str,
                      fallback: str = "t") -> dict:
    """Held-out FFR (mean, SD over draws) of one z method with n_cal calibration strides."""
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(draws):
        p = rng.permutation(len(scores))
        cal = calibration.fit(scores[p[:n_cal]], names, method=method, max_trial_strides=1,
                              fallback=fallback)
        z = calibration.zscores(scores[p[n_cal:]], cal)
        rates.append(calibration.stride_flags(z, cal).any(-1).mean())
    return {"method": method, "fallback": fallback, "n_cal": n_cal,
            "threshold": cal["threshold_method"], "ffr_mean": float(np.mean(rates)),
            "ffr_sd": float(np.std(rates)), "ffr_p90": float(np.quantile(rates, 0.9))}


def twin_study(model, x_cal, x_test, names) -> dict:
    """RMS (deg) to the clean stride on the perturbed joint: full-context twin vs sample mean."""
    res = {k: [] for k in ("full", "mean", "perturbed", "unflagged_full", "unflagged_mean",
                           "samples_only_coverage_2sd", "band_coverage_2sd", "band_sd")}
    p1 = scoring.score_strides(model, x_cal)
    resid = calibration.residual_sd(p1.recon_ntjc, x_cal, np.isfinite(x_cal).all(-1))
    for j in range(len(names)):
        y = perturb(x_test, j, "offset")
        flags = np.broadcast_to(np.arange(len(names)) == j, (len(y), len(names)))
        tw = twin.normative_twin(model, y, None, flags, keep_observed=False)
        sd = np.sqrt(tw.sd_ntjc ** 2 + resid ** 2)
        d = lambda a: np.sqrt(np.nanmean((a[:, :, j] - x_test[:, :, j]) ** 2))
        o = lambda a: np.sqrt(np.nanmean((np.delete(a, j, 2) - np.delete(x_test, j, 2)) ** 2))
        res["full"].append(d(tw.recon_ntjc))
        res["mean"].append(d(tw.mean_ntjc))
        res["perturbed"].append(d(y))
        res["unflagged_full"].append(o(tw.recon_ntjc))
        res["unflagged_mean"].append(o(tw.mean_ntjc))
        ok = np.isfinite(x_test[:, :, j])
        err = np.abs(tw.recon_ntjc[:, :, j] - x_test[:, :, j])
        res["samples_only_coverage_2sd"].append(np.mean((err <= 2 * tw.sd_ntjc[:, :, j])[ok]))
        res["band_coverage_2sd"].append(np.mean((err <= 2 * sd[:, :, j])[ok]))
        res["band_sd"].append(np.mean(sd[:, :, j]))
    return {k: float(np.mean(v)) for k, v in res.items()}


def main(argv: list[str]) -> None:
    """--workdir=DIR --healthy=FILE [--n_test=64]: runs every study."""
    from gengait_jax import train
    args = dict(a.lstrip("-").split("=", 1) for a in argv[1:])
    model, _, meta = train.restore_model(args["workdir"])
    names = meta["joint_names"]
    data = np.load(args["healthy"])
    x, _ = scoring.prepare(data["angles"], data["valid"] if "valid" in data else None)
    half = len(x) // 2
    x_cal, x_test = x[:half], x[half:half + int(args.get("n_test", 64))]
    only = args.get("only", "pass1,calibration,twin").split(",")
    for m in (0, 4) if "pass1" in only else ():
        print(json.dumps({"study": "pass1", **pass1_study(model, x_cal, x_test, names, m)}))
    scores = scoring.score_strides(model, x).score_nj if "calibration" in only else None
    for method in ("median_mad", "mean_sd") if "calibration" in only else ():
        for n_cal, fb in ((9, "gaussian"), (9, "t"), (15, "t"), (20, "t"), (40, "t"), (100, "t")):
            print(json.dumps({"study": "calibration", **calibration_study(
                scores, names, n_cal, 300, method, fb)}))
    if "twin" in only:
        print(json.dumps({"study": "twin", **twin_study(model, x_cal, x_test, names)}))


if __name__ == "__main__":
    main(sys.argv)
