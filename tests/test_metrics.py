"""attention_utils.metrics on hand-made maps, values computed by hand."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from attention_utils.metrics import kl_divergence, mean_defined, nss, shuffled_auc

ONE_HOT = np.array([[1.0, 0.0], [0.0, 0.0]])


def test_nss_hand_values():
    # saliency [[1,0],[0,0]]: mean 1/4, std sqrt(1/4 - 1/16) = sqrt(3)/4
    assert nss(ONE_HOT, np.array([[1, 0], [0, 0]])) == pytest.approx(math.sqrt(3))  # (3/4) / (sqrt(3)/4): perfect
    assert nss(ONE_HOT, np.array([[0, 0], [0, 1]])) == pytest.approx(-1 / math.sqrt(3))  # anti-correlated
    # counts weight the average: 2 fixations on the hot pixel, 1 on a cold one -> (2*sqrt(3) - 1/sqrt(3)) / 3
    assert nss(ONE_HOT, np.array([[2, 1], [0, 0]])) == pytest.approx((2 * math.sqrt(3) - 1 / math.sqrt(3)) / 3)


def test_nss_undefined_cases():
    assert nss(np.full((2, 2), 0.7), np.array([[1, 0], [0, 0]])) is None  # uniform map: zero variance
    assert nss(ONE_HOT, np.zeros((2, 2))) is None  # no fixations


def test_kl_hand_values():
    fixations = np.array([[1, 0], [0, 0]])
    assert kl_divergence(ONE_HOT, fixations, sigma=0) == pytest.approx(0.0, abs=1e-9)  # perfect
    assert kl_divergence(np.full((2, 2), 0.25), fixations, sigma=0) == pytest.approx(math.log(4))  # uniform: log 4
    assert kl_divergence(np.array([[1.0, 3.0], [0.0, 0.0]]), fixations, sigma=0) == pytest.approx(
        math.log(4)
    )  # 1 * log(1 / (1/4))
    # anti-correlated: all saliency where nobody looks -> huge (log of 1/eps)
    assert kl_divergence(np.array([[0.0, 0.0], [0.0, 1.0]]), fixations, sigma=0) > 30


def test_kl_blurs_the_fixations_with_sigma_5():
    fixations = np.zeros((40, 40))
    fixations[20, 20] = 1
    blurred = gaussian_filter(fixations, 5.0, mode="constant")
    assert kl_divergence(blurred, fixations) == pytest.approx(0.0, abs=1e-9)  # the blurred map is the perfect prediction
    assert kl_divergence(fixations, fixations) > 5  # the unblurred point misses most of the blurred mass


def test_kl_undefined_cases():
    assert kl_divergence(ONE_HOT, np.zeros((2, 2))) is None
    assert kl_divergence(np.zeros((2, 2)), np.array([[1, 0], [0, 0]])) is None


def test_shuffled_auc_hand_values():
    fixations = np.array([[1, 0], [0, 0]])
    others = np.array([[0, 1], [1, 0]])  # other frames looked at two other pixels
    assert shuffled_auc(ONE_HOT, fixations, others) == pytest.approx(1.0)  # perfect
    assert shuffled_auc(1 - ONE_HOT, fixations, others) == pytest.approx(0.0)  # anti-correlated
    assert shuffled_auc(np.full((2, 2), 0.3), fixations, others) == pytest.approx(0.5)  # uniform: chance
    # one positive (0.5) against negatives 0.2 and 0.9: it beats one of two -> 0.5
    assert shuffled_auc(np.array([[0.5, 0.2], [0.9, 0.0]]), fixations, others) == pytest.approx(0.5)


def test_shuffled_auc_scores_a_shared_centre_bias_at_chance():
    """Every frame's fixations cluster at the centre: a centre-prior map separates nothing."""
    yy, xx = np.mgrid[:21, :21]
    centre_prior = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / 20.0)
    fixations = np.zeros((21, 21))
    fixations[10, 11] = 1
    others = np.zeros((21, 21))
    others[9, 10] = others[11, 10] = others[10, 9] = 1  # same distance from the centre
    assert shuffled_auc(centre_prior, fixations, others) == pytest.approx(0.5)


def test_shuffled_auc_undefined_cases():
    fixations = np.array([[1, 0], [0, 0]])
    assert shuffled_auc(ONE_HOT, np.zeros((2, 2)), fixations) is None  # no positives
    assert shuffled_auc(ONE_HOT, fixations, fixations) is None  # the only negative is a positive: none left


def test_mean_defined_drops_undefined():
    assert mean_defined([1.0, None, 3.0]) == 2.0
    assert mean_defined([None, None]) is None
