"""Saliency metrics of "Free-Lunch Saliency via Attention in Atari Agents" (section 4.3):
NSS (eq. 1), KL divergence against the fixation map blurred with sigma 5 (eq. 2) and shuffled AUC.

Maps are 2-D arrays of the same shape: `saliency` holds floats, `fixations` counts (how many fixations
fell on each pixel). A metric that is undefined for its input returns None, never a number: the paper
averages per-frame metrics "dropping frames with undefined metrics", and `mean_defined` does the same.
"""

from typing import Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

KL_BLUR_SIGMA = 5.0
EPSILON = np.finfo(np.float64).eps  # keeps log() finite where the saliency is 0 (as the MIT saliency benchmark does)


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


def kl_divergence(saliency: np.ndarray, fixations: np.ndarray, sigma: float = KL_BLUR_SIGMA) -> Optional[float]:
    """D_KL(f || s), eq. (2): the fixation map blurred with a Gaussian of `sigma` pixels, both maps
    normalised into distributions over the pixels; 0 for a perfect prediction, larger is worse.
    Undefined (None) for a frame without fixations or a saliency map without mass (all zero or negative)."""
    saliency, fixations = np.asarray(saliency, np.float64), np.asarray(fixations, np.float64)
    if fixations.sum() <= 0 or (saliency < 0).any() or saliency.sum() <= 0:
        return None
    blurred = gaussian_filter(fixations, sigma, mode="constant") if sigma > 0 else fixations
    f = blurred / blurred.sum()
    s = saliency / saliency.sum()
    return float((f * np.log(EPSILON + f / (s + EPSILON))).sum())


def shuffled_auc(saliency: np.ndarray, fixations: np.ndarray, other_fixations: np.ndarray) -> Optional[float]:
    """Shuffled AUC: the ROC AUC of the saliency values at this frame's fixated pixels (positives)
    against its values at the pixels fixated in *other* frames of the dataset (negatives), so a centre
    bias shared by all frames scores at chance (0.5); 1 is perfect. `other_fixations` is the summed
    fixation map of other frames (each fixated pixel counts once as a negative, pixels also fixated in
    this frame are left out). Undefined (None) without positives or without negatives."""
    saliency = np.asarray(saliency, np.float64)
    positive = np.asarray(fixations) > 0
    negative = (np.asarray(other_fixations) > 0) & ~positive
    if not positive.any() or not negative.any():
        return None
    scores = np.concatenate([saliency[positive], saliency[negative]])
    labels = np.concatenate([np.ones(positive.sum()), np.zeros(negative.sum())])
    return float(roc_auc_score(labels, scores))


def mean_defined(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the defined values (None dropped); None when none is defined."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
