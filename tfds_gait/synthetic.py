"""A statistical normative cohort: functional PCA of whole strides, subject + stride variation.

Right-foot strides are made 'ipsilateral-first' by swapping the L and R joint blocks (joint
sets list all left joints, then the same right joints), so one model covers both sides; a
mean stride per stride side keeps the cohort's average left/right asymmetry. Whole strides
(T x J x C flattened) minus their side's mean are projected on their principal components,
which keeps the joints and the time points coupled. The PC scores split into a between-subject
part (the covariance of subject means, less the stride noise those means still carry) and a
within-subject part (the covariance of strides around their subject's mean), each a Gaussian.
Sampling draws a subject offset, then strides around it, alternating the side from a random
first one as in a walking trial (swapping back for 'R').
Every generated stride is a side mean plus a combination of real strides' deviations, so it is
as smooth and as nearly periodic as the data.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CohortModel:
    """Side means, principal directions and the two score covariances."""
    side_means: np.ndarray    # [2, T * J * C], canonical mean stride of 'L' and 'R' strides
    components: np.ndarray    # [K, T * J * C]
    between_cov: np.ndarray   # [K, K], subject offsets
    within_cov: np.ndarray    # [K, K], strides around their subject
    shape: tuple[int, int, int]

    def save(self, path: str) -> None:
        """Writes the model as .npz."""
        np.savez(path, **{f.name: np.asarray(getattr(self, f.name))
                          for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str) -> "CohortModel":
        """Reads a model written by `save`."""
        with np.load(path) as z:
            fields = {f.name: z[f.name] for f in dataclasses.fields(cls)}
        fields["shape"] = tuple(int(v) for v in fields["shape"])
        return cls(**fields)


def swap_sides(angles_stjc: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Swaps the L and R joint blocks of the strides flagged `right`."""
    j = angles_stjc.shape[2]
    if j % 2:
        raise ValueError(f"joint sets must be L and R blocks of equal size, got J={j}")
    swapped = np.concatenate([angles_stjc[:, :, j // 2:], angles_stjc[:, :, :j // 2]], axis=2)
    return np.where(np.asarray(right)[:, None, None, None], swapped, angles_stjc)


def _check_inputs(angles_stjc: np.ndarray, subjects: np.ndarray, sides: np.ndarray) -> None:
    """ValueError for non-finite angles, odd sides or too few subjects/strides."""
    if not np.all(np.isfinite(angles_stjc)):
        raise ValueError("angles must be finite (fill or drop invalid strides first)")
    if not set(np.unique(sides)) <= {"L", "R"}:
        raise ValueError(f"sides must be 'L' or 'R', got {sorted(set(np.unique(sides)))}")
    uniq, counts = np.unique(subjects, return_counts=True)
    if len(uniq) < 2 or counts.max() < 2:
        raise ValueError(f"need >= 2 subjects and one with >= 2 strides, got counts {counts}")


def _psd(cov: np.ndarray) -> np.ndarray:
    """The nearest positive semi-definite matrix (negative eigenvalues set to 0)."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v * np.clip(w, 0, None)) @ v.T


def _score_covariances(scores: np.ndarray, subjects: np.ndarray):
    """(between, within) covariances of PC scores [S, K] grouped by subject."""
    uniq, inverse, counts = np.unique(subjects, return_inverse=True, return_counts=True)
    means = np.stack([scores[inverse == u].mean(axis=0) for u in range(len(uniq))])
    resid = scores - means[inverse]
    within = resid.T @ resid / (len(scores) - len(uniq))
    between = np.cov(means, rowvar=False, ddof=1).reshape(within.shape)
    return _psd(between - within * np.mean(1.0 / counts)), within


def fit_cohort_model(angles_stjc: np.ndarray, subject_ids: np.ndarray, sides: np.ndarray,
                     n_components: int = 8) -> CohortModel:
    """Fits the cohort model on real strides [S, T, J, C] (see module docstring)."""
    subjects, sides = np.asarray(subject_ids), np.asarray(sides).astype(str)
    _check_inputs(angles_stjc, subjects, sides)
    right = sides == "R"
    x = swap_sides(np.asarray(angles_stjc, np.float64), right).reshape(len(right), -1)
    side_means = np.stack([x[r].mean(axis=0) if r.any() else x.mean(axis=0)
                           for r in (~right, right)])
    resid = x - side_means[right.astype(int)]
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    comps = vt[:min(n_components, len(x) - 1)]
    between, within = _score_covariances(resid @ comps.T, subjects)
    return CohortModel(side_means=side_means, components=comps, between_cov=between,
                       within_cov=within, shape=tuple(np.shape(angles_stjc)[1:]))


def _factor(cov: np.ndarray) -> np.ndarray:
    """A matrix L with L @ L.T == cov, for a positive semi-definite cov."""
    w, v = np.linalg.eigh(cov)
    return v * np.sqrt(np.clip(w, 0, None))


def sample_cohort(model: CohortModel, n_subjects: int, strides_per_subject: int,
                  seed: int) -> dict[str, np.ndarray]:
    """Draws n_subjects x strides_per_subject strides; deterministic by seed."""
    rng = np.random.default_rng(seed)
    k = len(model.components)
    subject = np.repeat(np.arange(n_subjects, dtype=np.int32), strides_per_subject)
    offsets = rng.standard_normal((n_subjects, k)) @ _factor(model.between_cov).T
    scores = offsets[subject] + rng.standard_normal((len(subject), k)) @ _factor(
        model.within_cov).T
    first_right = rng.random(n_subjects) < 0.5
    right = first_right[subject] ^ (np.arange(len(subject)) % strides_per_subject % 2 == 1)
    x = model.side_means[right.astype(int)] + scores @ model.components
    angles = swap_sides(x.reshape((len(subject),) + model.shape), right).astype(np.float32)
    return {"angles": angles, "subject": subject, "side": np.where(right, "R", "L")}


def _subject_means(angles_stjc: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Mean stride per subject [U, T, J, C]."""
    return np.stack([angles_stjc[subjects == s].mean(axis=0) for s in np.unique(subjects)])


def pairwise_rms(means_utjc: np.ndarray) -> np.ndarray:
    """RMS distance (deg) between every pair of subject mean strides [U * (U - 1) / 2]."""
    flat = means_utjc.reshape(len(means_utjc), -1).astype(np.float64)
    sq = (flat ** 2).mean(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2 * flat @ flat.T / flat.shape[1]
    return np.sqrt(np.clip(d2[np.triu_indices(len(flat), k=1)], 0, None))


def _canonical(angles_stjc: np.ndarray, sides) -> np.ndarray:
    """Float64 strides, ipsilateral-first where `sides` is given."""
    x = np.asarray(angles_stjc, np.float64)
    return x if sides is None else swap_sides(x, np.asarray(sides).astype(str) == "R")


def compare_cohorts(real_stjc: np.ndarray, real_subjects: np.ndarray, synth_stjc: np.ndarray,
                    synth_subjects: np.ndarray, *, real_sides=None, synth_sides=None) -> dict:
    """Mean-curve RMS difference and SD-band ratio per joint; between-subject distances.

    Returns `mean_rms_diff_deg` [J] (RMS over time and channels of the difference of the
    mean curves), `sd_ratio` [J] (synthetic / real SD across strides, averaged over time and
    channels), and `between_real_deg` / `between_synth_deg`: the RMS distances between every
    two subjects' mean strides. With both cohorts' sides, everything is measured on
    ipsilateral-first strides, so a subject's share of right strides does not move its mean.
    """
    real, synth = _canonical(real_stjc, real_sides), _canonical(synth_stjc, synth_sides)
    mean_diff = np.sqrt(np.mean((real.mean(0) - synth.mean(0)) ** 2, axis=(0, 2)))
    sd_ratio = synth.std(0).mean(axis=(0, 2)) / real.std(0).mean(axis=(0, 2))
    return {"mean_rms_diff_deg": mean_diff, "sd_ratio": sd_ratio,
            "between_real_deg": pairwise_rms(_subject_means(real, np.asarray(real_subjects))),
            "between_synth_deg": pairwise_rms(_subject_means(synth,
                                                             np.asarray(synth_subjects)))}
