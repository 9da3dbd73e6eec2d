"""attention_utils.metrics on hand-made maps, values computed by hand."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from attention_utils.metrics import kl_divergence, mean_defined, nss, shuffled_auc

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


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
    # two fixations on the first pixel, one on the second: f = (2/3, 1/3), s = (1/4, 3/4)
    assert kl_divergence(np.array([[1.0, 3.0], [0.0, 0.0]]), np.array([[2, 1], [0, 0]]), sigma=0) == pytest.approx(
        2 / 3 * math.log((2 / 3) / (1 / 4)) + 1 / 3 * math.log((1 / 3) / (3 / 4))
    )


def test_kl_is_undefined_where_the_saliency_misses_a_fixation():
    """Eq. (2) without a regulariser: s = 0 where f > 0 is an infinite divergence, a frame the paper drops;
    the MIT benchmark's epsilon keeps it finite but huge (log of 1/eps)."""
    fixations = np.array([[1, 0], [0, 0]])
    anti = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert kl_divergence(anti, fixations, sigma=0) is None
    assert kl_divergence(anti, fixations, sigma=0, normalisation="epsilon") > 30
    # a zero where nobody looks is fine: 0 log 0 = 0
    assert kl_divergence(np.array([[1.0, 0.0], [0.0, 0.0]]), fixations, sigma=0) == pytest.approx(0.0, abs=1e-12)


def test_kl_min_max_reading():
    """Section 4.3's "normalized to [0..1]" taken literally: s = (1, 3, 0, 0) -> (1/3, 1, 0, 0); fixations
    (2, 1, 0, 0) -> (1, 1/2, 0, 0); sum f log(f / s) = log 3 + 1/2 log(1/2)."""
    saliency = np.array([[1.0, 3.0], [0.0, 0.0]])
    assert kl_divergence(saliency, np.array([[2, 1], [0, 0]]), sigma=0, normalisation="min-max") == pytest.approx(
        math.log(3) + 0.5 * math.log(0.5)
    )
    assert kl_divergence(np.full((2, 2), 0.3), np.array([[1, 0], [0, 0]]), sigma=0, normalisation="min-max") is None
    with pytest.raises(ValueError, match="normalisation must be one of"):
        kl_divergence(saliency, np.array([[1, 0], [0, 0]]), normalisation="sum")


def test_kl_blurs_the_fixations_with_sigma_5():
    fixations = np.zeros((40, 40))
    fixations[20, 20] = 1
    blurred = gaussian_filter(fixations, 5.0, mode="constant")
    assert kl_divergence(blurred, fixations) == pytest.approx(0.0, abs=1e-9)  # the blurred map is the perfect prediction
    # the unblurred point misses most of the blurred mass: where it is 0 the divergence is infinite (undefined)
    assert kl_divergence(fixations, fixations) is None
    assert kl_divergence(fixations, fixations, normalisation="epsilon") > 5
    assert kl_divergence(fixations + 1e-6, fixations) > 5


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


def test_shuffled_auc_counts_every_fixation():
    """Every fixation is a sample: the positive 0.5 (fixated twice) against 0.2 fixated 3 times and 0.9 once
    elsewhere beats 3 of 4 negatives -> 0.75; counting each pixel once (the earlier variant) gives 1 of 2."""
    saliency = np.array([[0.5, 0.2], [0.9, 0.0]])
    fixations, others = np.array([[2, 0], [0, 0]]), np.array([[0, 3], [1, 0]])
    assert shuffled_auc(saliency, fixations, others) == pytest.approx(0.75)
    assert shuffled_auc(saliency, fixations, others, count_weighted=False) == pytest.approx(0.5)
    # a pixel fixated here and in another frame is also a negative: a tie, worth 1/2.
    # negatives: 0.5 once (tie), 0.2 three times (beaten) -> (1/2 + 3) / 4
    assert shuffled_auc(saliency, fixations, np.array([[1, 3], [0, 0]])) == pytest.approx(3.5 / 4)


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
    assert shuffled_auc(ONE_HOT, fixations, np.zeros((2, 2))) is None  # no negatives
    # the earlier variant leaves this frame's pixels out of the negatives: none left
    assert shuffled_auc(ONE_HOT, fixations, fixations, count_weighted=False) is None


def test_mean_defined_drops_undefined():
    assert mean_defined([1.0, None, 3.0]) == 2.0
    assert mean_defined([None, None]) is None
