"""A statistical normative cohort: functional PCA of whole strides, subject + stride variation.

Right-foot strides are made 'ipsilateral-first' by swapping the L and R joint blocks (joint
sets list all left joints, then the same right joints), so one model covers both sides. Whole
strides (T x J x C flattened) are projected on their principal components, which keeps the
joints coupled; the PC scores split into a between-subject part (subject means) and a
within-subject part (stride residuals), each a diagonal Gaussian. Sampling draws a subject
offset, then strides around it, then a side (swapping back for 'R').
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CohortModel:
    """Mean stride, principal directions and the two score variances."""
    mean: np.ndarray          # [T * J * C]
    components: np.ndarray    # [K, T * J * C]
    between_var: np.ndarray   # [K]
    within_var: np.ndarray    # [K]
    shape: tuple[int, int, int]
    right_fraction: float

    def save(self, path: str) -> None:
        """Writes the model as .npz."""
        np.savez(path, **{f.name: np.asarray(getattr(self, f.name))
                          for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str) -> "CohortModel":
        """Reads a model written by `save`."""
        z = np.load(path)
        return cls(z["mean"], z["components"], z["between_var"], z["within_var"],
                   tuple(int(v) for v in z["shape"]), float(z["right_fraction"]))


def swap_sides(angles_stjc: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Swaps the L and R joint blocks of the strides flagged `right`."""
    j = angles_stjc.shape[2]
    if j % 2:
        raise ValueError(f"joint sets must be L and R blocks of equal size, got J={j}")
    swapped = np.concatenate([angles_stjc[:, :, j // 2:], angles_stjc[:, :, :j // 2]], axis=2)
    return np.where(np.asarray(right)[:, None, None, None], swapped, angles_stjc)


def fit_cohort_model(angles_stjc: np.ndarray, subject_ids: np.ndarray, sides: np.ndarray,
                     n_components: int = 12) -> CohortModel:
    """Fits the cohort model on real strides (see module docstring)."""
    right = np.asarray(sides) == "R"
    x = swap_sides(np.asarray(angles_stjc, np.float64), right).reshape(len(right), -1)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(n_components, len(x) - 1)
    comps = vt[:k]
    scores = (x - mean) @ comps.T
    subjects = np.asarray(subject_ids)
    uniq = np.unique(subjects)
    subj_mean = np.stack([scores[subjects == s].mean(axis=0) for s in uniq])
    resid = scores - subj_mean[np.searchsorted(uniq, subjects)]
    dof = max(len(x) - len(uniq), 1)
    return CohortModel(mean=mean, components=comps, between_var=subj_mean.var(axis=0, ddof=1),
                       within_var=(resid ** 2).sum(axis=0) / dof,
                       shape=tuple(np.shape(angles_stjc)[1:]), right_fraction=float(right.mean()))


def sample_cohort(model: CohortModel, n_subjects: int, strides_per_subject: int,
                  seed: int) -> dict[str, np.ndarray]:
    """Draws n_subjects x strides_per_subject strides; deterministic by seed."""
    rng = np.random.default_rng(seed)
    k = len(model.between_var)
    offsets = rng.normal(size=(n_subjects, k)) * np.sqrt(model.between_var)
    subject = np.repeat(np.arange(n_subjects, dtype=np.int32), strides_per_subject)
    scores = offsets[subject] + rng.normal(size=(len(subject), k)) * np.sqrt(model.within_var)
    x = (model.mean + scores @ model.components).reshape((len(subject),) + model.shape)
    right = rng.random(len(subject)) < model.right_fraction
    angles = swap_sides(x, right).astype(np.float32)
    return {"angles": angles, "subject": subject, "side": np.where(right, "R", "L")}


def _subject_means(angles_stjc: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Mean stride per subject [U, T, J, C]."""
    return np.stack([angles_stjc[subjects == s].mean(axis=0) for s in np.unique(subjects)])


def _pairwise_rms(means_utjc: np.ndarray) -> np.ndarray:
    """RMS distance (deg) between every pair of subject mean strides."""
    u = len(means_utjc)
    flat = means_utjc.reshape(u, -1)
    return np.asarray([np.sqrt(np.mean((flat[a] - flat[b]) ** 2))
                       for a in range(u) for b in range(a + 1, u)])


def compare_cohorts(real_stjc: np.ndarray, real_subjects: np.ndarray,
                    synth_stjc: np.ndarray, synth_subjects: np.ndarray) -> dict:
    """Mean-curve RMS difference, SD-band ratio per joint, between-subject distances."""
    mean_diff = np.sqrt(np.mean((real_stjc.mean(0) - synth_stjc.mean(0)) ** 2, axis=(0, 2)))
    sd_ratio = (synth_stjc.std(0).mean(axis=(0, 2)) / real_stjc.std(0).mean(axis=(0, 2)))
    real_d = _pairwise_rms(_subject_means(real_stjc, np.asarray(real_subjects)))
    synth_d = _pairwise_rms(_subject_means(synth_stjc, np.asarray(synth_subjects)))
    return {"mean_rms_diff_deg": mean_diff, "sd_ratio": sd_ratio,
            "between_subject_rms_real": (float(np.median(real_d)), float(real_d.max())),
            "between_subject_rms_synth": (float(np.median(synth_d)), float(synth_d.max()))}
