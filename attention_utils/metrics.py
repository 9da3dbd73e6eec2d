"""Saliency metrics of "Free-Lunch Saliency via Attention in Atari Agents" (section 4.3):
NSS (eq. 1), KL divergence against the fixation map blurred with sigma 5 (eq. 2) and shuffled AUC.

Maps are 2-D arrays of the same shape: `saliency` holds floats, `fixations` counts (how many fixations
fell on each pixel). A metric that is undefined for its input returns None, never a number: the paper
averages per-frame metrics "dropping frames with undefined metrics", and `mean_defined` does the same.
"""

from typing import Literal, Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

KL_BLUR_SIGMA = 5.0
EPSILON = np.finfo(np.float64).eps  # the MIT saliency benchmark's regulariser (KL_NORMALISATIONS' "epsilon")
KL_NORMALISATIONS = ("distribution", "min-max", "epsilon")
KlNormalisation = Literal["distribution", "min-max", "epsilon"]


def nss(saliency: np.ndarray, fixations: np.ndarray) -> Optional[float]:
    """Normalized scanpath saliency, eq. (1): the saliency normalised to zero mean and unit variance,
    averaged over pixels weighted by their fixation counts. Undefined (None) for a constant saliency map
    or a frame without fixations."""
    saliency, fixations = np.asarray(saliency, np.float64), np.asarray(fixations, np.float64)
    std = saliency.std()
    if std == 0 or fixations.sum() <= 0:
        return None
    normalised = (saliency - saliency.mean()) / std
    return float((fixations * normalised).sum() / fixations.sum())


def kl_divergence(
    saliency: np.ndarray,
    fixations: np.ndarray,
    sigma: float = KL_BLUR_SIGMA,
    normalisation: KlNormalisation = "distribution",
) -> Optional[float]:
    """D_KL(f || s) = sum f_bar log(f_bar / s_bar), eq. (2), with f the fixation map blurred with a Gaussian of
    `sigma` pixels; 0 for a perfect prediction, larger is worse. `normalisation` makes f_bar and s_bar:

    - "distribution" (default): both maps divided by their sums, so eq. (2) is the KL divergence between
      two distributions over the pixels that section 4.3 calls it; no regulariser, so a frame whose
      saliency is 0 at a pixel where f_bar is not (an infinite divergence) is undefined and dropped, as
      the paper drops frames with undefined metrics. This is what Table 4's values (about 3) measure: the
      authors' released evaluation divides both maps by their sums the same way.
    - "min-max": section 4.3's words taken literally, "normalized to [0..1]": each map min-max scaled
      (a constant saliency map is undefined). Not a divergence (f_bar does not sum to 1: a map of noise
      scores about as well as a perfect one), kept to show what that reading gives.
    - "epsilon": divided by their sums with the MIT saliency benchmark's regulariser,
      sum f_bar log(eps + f_bar / (s_bar + eps)), which keeps every frame finite (large where the map misses).

    Undefined (None) as well for a frame without fixations or a saliency map with negative values or no mass."""
    if normalisation not in KL_NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {KL_NORMALISATIONS}, not {normalisation!r}")
    saliency, fixations = np.asarray(saliency, np.float64), np.asarray(fixations, np.float64)
    if fixations.sum() <= 0 or (saliency < 0).any() or saliency.sum() <= 0:
        return None
    blurred = gaussian_filter(fixations, sigma, mode="constant") if sigma > 0 else fixations
    if normalisation == "epsilon":
        f, s = blurred / blurred.sum(), saliency / saliency.sum()
        return float((f * np.log(EPSILON + f / (s + EPSILON))).sum())
    if normalisation == "distribution":
        f, s = blurred / blurred.sum(), saliency / saliency.sum()
    else:  # min-max
        if saliency.max() == saliency.min():
            return None
        f = (blurred - blurred.min()) / (blurred.max() - blurred.min())
        s = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    looked_at = f > 0  # 0 log 0 = 0
    if (s[looked_at] == 0).any():  # log(f / 0): infinite
        return None
    return float((f[looked_at] * np.log(f[looked_at] / s[looked_at])).sum())


def shuffled_auc(
    saliency: np.ndarray, fixations: np.ndarray, other_fixations: np.ndarray, count_weighted: bool = True
) -> Optional[float]:
    """Shuffled AUC: the ROC AUC of the saliency at this frame's fixations (positives) against the saliency
    at real fixations of *other* frames of the dataset (negatives), so a centre bias shared by all frames
    scores at chance (0.5); 1 is perfect. `other_fixations` is the summed fixation map of the other frames.

    count_weighted (default, section 4.3's "true fixations as true positives ... real fixations for other
    frames as true negatives"): every fixation is one sample, so a pixel counts as many times as it was
    fixated, and a pixel fixated both here and elsewhere is a positive and a negative (a tie). Otherwise
    (the earlier variant here): every fixated pixel counts once, and pixels also fixated in this frame are
    left out of the negatives. Undefined (None) without positives or without negatives."""
    saliency = np.asarray(saliency, np.float64)
    fixations, other_fixations = np.asarray(fixations, np.float64), np.asarray(other_fixations, np.float64)
    positive = fixations > 0
    negative = other_fixations > 0
    if not count_weighted:
        negative &= ~positive
    if not positive.any() or not negative.any():
        return None
    scores = np.concatenate([saliency[positive], saliency[negative]])
    labels = np.concatenate([np.ones(positive.sum()), np.zeros(negative.sum())])
    weights = np.concatenate([fixations[positive], other_fixations[negative]]) if count_weighted else None
    return float(roc_auc_score(labels, scores, sample_weight=weights))


def mean_defined(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the defined values (None dropped); None when none is defined."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
