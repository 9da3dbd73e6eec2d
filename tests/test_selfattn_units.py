"""Unit tests of ppo_atari_selfattn.py's building blocks, with the script imported as a module."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SCRIPT, VARIANTS, script_env

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


H = W = 20  # the c1 grid
ATTENTION_KINDS = ["SWA", "CWRA", "CWCA", "CWRCA"]
TOL = 1e-6


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec)\n"
        "sys.argv = ['x', '--self-attn', 'XYZ', '--bogus']\n"  # must not be parsed at import time
        "spec.loader.exec_module(m)\n"
        "print('imported', m.Args().self_attn)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "imported NA\n", proc.stdout
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# SelfAttention: which output pixels a perturbation reaches


def changed_mask(script, kind, perturb, seed=0):
    """(H, W) bool: output pixels of SelfAttention(16, kind) (any channel, any sample) that change when
    the input is perturbed where `perturb` (H, W) is True (all channels there)."""
    torch.manual_seed(seed)
    module = script.SelfAttention(16, kind).double().eval()
    x = torch.randn(2, 16, H, W, dtype=torch.float64)
    noise = torch.randn(2, 16, H, W, dtype=torch.float64) * perturb.to(torch.float64)
    with torch.no_grad():
        base, moved = module(x), module(x + noise)
    assert base.shape == moved.shape == x.shape
    diff = (moved - base).abs().amax(dim=(0, 1))  # (H, W)
    mask = diff > TOL
    # the changed pixels change clearly, not by rounding: the threshold is far from both groups
    if mask.any():
        assert diff[mask].min() > 1e3 * TOL, diff[mask].min()
    return mask


def row_mask(r):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[r, :] = True
    return m


def col_mask(c):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[:, c] = True
    return m


def pixel_mask(r, c):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[r, c] = True
    return m


ALL = torch.ones(H, W, dtype=torch.bool)


@pytest.mark.parametrize("r", [0, 7, 19])
def test_cwca_row_perturbation_stays_in_row(script, r):
    assert torch.equal(changed_mask(script, "CWCA", row_mask(r)), row_mask(r))


@pytest.mark.parametrize("c", [0, 11, 19])
def test_cwra_column_perturbation_stays_in_column(script, c):
    assert torch.equal(changed_mask(script, "CWRA", col_mask(c)), col_mask(c))


@pytest.mark.parametrize("r, c", [(3, 12), (0, 19), (10, 10)])
def test_cwrca_pixel_perturbation_reaches_exactly_its_cross(script, r, c):
    assert torch.equal(changed_mask(script, "CWRCA", pixel_mask(r, c)), row_mask(r) | col_mask(c))


@pytest.mark.parametrize("kind, perturb", [("CWCA", col_mask(5)), ("CWRA", row_mask(5))])
def test_wrong_axis_perturbation_spreads_everywhere(script, kind, perturb):
    # the converse: a CWCA that attended along columns (or CWRA along rows) would keep these local
    assert torch.equal(changed_mask(script, kind, perturb), ALL)


@pytest.mark.parametrize("kind", ["CWCA", "CWRA"])
def test_single_pixel_reaches_its_row_or_column(script, kind):
    expected = row_mask(4) if kind == "CWCA" else col_mask(9)
    assert torch.equal(changed_mask(script, kind, pixel_mask(4, 9)), expected)


def test_swa_pixel_perturbation_spreads_everywhere(script):
    # SWA: rows attend to rows within each channel, whole rows as features: one pixel moves every key
    assert torch.equal(changed_mask(script, "SWA", pixel_mask(6, 2)), ALL)


def test_ada_attn_scales_attention_and_residual(script):
    torch.manual_seed(0)
    plain = script.SelfAttention(16, "CWRCA")
    ada = script.SelfAttention(16, "CWRCA", "alpha_beta")
    ada.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 16, H, W)
    with torch.no_grad():
        # the paper's public code starts alpha at 0 and beta at 1: the block starts as the identity
        assert ada.alpha.item() == 0.0 and ada.beta.item() == 1.0
        assert torch.equal(ada(x), x)
        ada.alpha.fill_(1.0)
        assert torch.allclose(ada(x), plain(x), atol=1e-6)  # alpha = beta = 1: the plain block
        ada.alpha.fill_(0.0)
        ada.beta.fill_(2.0)
        assert torch.allclose(ada(x), 2 * x)
        ada.alpha.fill_(3.0)
        ada.beta.fill_(0.0)
        assert torch.allclose(ada(x), 3 * plain.attention_term(x), atol=1e-5)
    assert script.SelfAttention(16, "CWCA", "alpha").beta is None
    assert script.SelfAttention(16, "CWCA", "beta").alpha is None


def test_unknown_attention_kind_raises(script):
    with pytest.raises(ValueError):
        script.SelfAttention(16, "XYZ")


# ---------------------------------------------------------------------------------------------------
# Agent


def random_obs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
def test_agent_shapes(script, variant):
    torch.manual_seed(0)
    num_actions, n = 6, 3
    agent = script.Agent(num_actions, variant)
    x = random_obs(n)
    with torch.no_grad():
        assert agent.c1_features(x).shape == (n, 16, H, W)
        assert agent.hidden(x).shape == (n, 256)
        action, logprob, entropy, value = agent.get_action_and_value(x)
        assert action.shape == logprob.shape == entropy.shape == (n,)
        assert value.shape == (n, 1)
        assert action.dtype == torch.int64 and ((0 <= action) & (action < num_actions)).all()
        assert (logprob <= 0).all() and (entropy > 0).all() and (entropy <= np.log(num_actions) + 1e-5).all()
        assert agent.get_value(x).shape == (n, 1)
        assert torch.allclose(agent.get_value(x), value)
        # given actions: their log-probabilities; deterministic: the most probable action
        given = torch.tensor([0, num_actions - 1, 2])
        _, lp, _, _ = agent.get_action_and_value(x, given)
        logits = agent.actor(agent.hidden(x))
        assert torch.allclose(lp, torch.log_softmax(logits, -1)[torch.arange(n), given], atol=1e-5)
        greedy, _, _, _ = agent.get_action_and_value(x, deterministic=True)
        assert torch.equal(greedy, logits.argmax(-1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, lp16, _, v16 = agent.get_action_and_value(x, given)
        assert lp16.dtype == v16.dtype == torch.float32
        assert torch.allclose(v16, value, atol=0.1, rtol=0.1)
    assert (agent.attention is None) == (variant == "NA")


def test_c1_features_equal_conv_of_scaled_input(script):
    torch.manual_seed(0)
    agent = script.Agent(4, "NA")
    x = random_obs(2)
    with torch.no_grad():
        expected = torch.relu(agent.c1(x.float() / 255.0))
        assert torch.allclose(agent.c1_features(x), expected, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_maps(script, variant):
    torch.manual_seed(0)
    agent = script.Agent(4, variant)
    x = random_obs(3)
    maps = agent.attention_maps(x)
    if variant == "NA":
        assert maps == {}
    else:
        assert set(maps) == {"attention"}
        assert maps["attention"].shape == (3, H, W)
        assert maps["attention"].dtype == torch.float32
        expected = agent.attention.attention_term(agent.c1_features(x)).mean(1)
        assert torch.allclose(maps["attention"], expected.detach(), atol=1e-5)
        assert maps["attention"].std() > 0


def test_upsample_to_input(script):
    assert script.upsample_to_input(torch.rand(3, H, W)).shape == (3, 84, 84)
    for i, j in [(0, 0), (5, 13), (19, 19), (19, 0)]:
        hot = torch.zeros(1, H, W)
        hot[0, i, j] = 1.0
        up = script.upsample_to_input(hot)[0]
        expected = torch.zeros(84, 84)
        expected[4 * i : 4 * i + 8, 4 * j : 4 * j + 8] = 1.0
        assert torch.equal(up, expected), (i, j)


# ---------------------------------------------------------------------------------------------------
# initialisation


def assert_orthogonal_rows(weight, gain):
    w = weight.detach().reshape(weight.shape[0], -1).double()
    assert w.shape[0] <= w.shape[1], w.shape
    assert torch.allclose(w @ w.T, gain**2 * torch.eye(w.shape[0], dtype=torch.float64), atol=1e-5 * max(gain**2, 1e-2)), gain


@pytest.mark.parametrize("variant", ["NA", "CWRCA"])
def test_orthogonal_init(script, variant):
    torch.manual_seed(0)
    agent = script.Agent(6, variant)
    assert_orthogonal_rows(agent.actor.weight, 0.01)
    assert_orthogonal_rows(agent.critic.weight, 1.0)
    for layer in (agent.c1, agent.c2, agent.fc):
        assert_orthogonal_rows(layer.weight, np.sqrt(2))
    layers = [agent.actor, agent.critic, agent.c1, agent.c2, agent.fc]
    if agent.attention is not None:
        for conv in (agent.attention.query, agent.attention.key, agent.attention.value):
            assert_orthogonal_rows(conv.weight, np.sqrt(2))
            layers.append(conv)
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0


# ---------------------------------------------------------------------------------------------------
# compute_gae: hand-computed cases


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_compute_gae_termination_and_truncation_inside_rollout(script):
    gamma, lam = 0.9, 0.8  # gamma * lambda = 0.72
    # T = 3 steps (rows) x N = 2 envs (columns)
    # env 0: obs[1] is the final observation of an episode ended by TERMINATION: no bootstrap into it,
    #        lambda chain cut; step 1 is envpool's reset step (reward 0), obs[2] starts a new episode.
    # env 1: obs[2] is the final observation of an episode ended by TRUNCATION: step 1 bootstraps from
    #        V(obs[2]) = 4.0, lambda chain cut; step 2 is the reset step.
    rewards = t([[1.0, 0.5], [0.0, 1.0], [2.0, 0.0]])
    values = t([[0.5, 1.0], [2.0, 3.0], [1.0, 4.0]])
    dones = t([[0, 0], [1, 0], [0, 1]])
    terminals = t([[0, 0], [1, 0], [0, 0]])
    next_value, next_done, next_terminal = t([2.0, 0.5]), t([0, 0]), t([0, 0])
    # env 0:
    #   t=2: delta = 2.0 + 0.9 * 2.0 - 1.0 = 2.8;                      A = 2.8
    #   t=1: delta = 0.0 + 0.9 * 1.0 - 2.0 = -1.1;                     A = -1.1 + 0.72 * 2.8 = 0.916
    #   t=0: next obs terminal: delta = 1.0 + 0 - 0.5 = 0.5; chain cut: A = 0.5
    # env 1:
    #   t=2: delta = 0.0 + 0.9 * 0.5 - 4.0 = -3.55;                   A = -3.55
    #   t=1: truncation bootstraps: delta = 1.0 + 0.9 * 4.0 - 3.0 = 1.6; chain cut: A = 1.6
    #   t=0: delta = 0.5 + 0.9 * 3.0 - 1.0 = 2.2;                      A = 2.2 + 0.72 * 1.6 = 3.352
    expected_adv = t([[0.5, 3.352], [0.916, 1.6], [2.8, -3.55]])
    # returns = advantages + values
    expected_ret = t([[1.0, 4.352], [2.916, 4.6], [3.8, 0.45]])
    adv, ret = script.compute_gae(rewards, values, dones, terminals, next_value, next_done, next_terminal, gamma, lam)
    assert adv.shape == ret.shape == (3, 2)
    assert torch.allclose(adv, expected_adv, atol=1e-12), adv
    assert torch.allclose(ret, expected_ret, atol=1e-12), ret


def test_compute_gae_episode_end_at_rollout_boundary(script):
    gamma, lam = 0.9, 0.8
    # T = 2, N = 2; the observation after the rollout (obs[T]) is an episode's final observation:
    # env 0 by termination (next_terminal = 1), env 1 by truncation (next_terminal = 0, bootstrap 10.0).
    rewards = t([[1.0, 1.0], [2.0, 2.0]])
    values = t([[0.5, 0.5], [1.0, 1.0]])
    zeros = t([[0, 0], [0, 0]])
    next_value, next_done, next_terminal = t([10.0, 10.0]), t([1, 1]), t([1, 0])
    # env 0: t=1: delta = 2.0 + 0 - 1.0 = 1.0;            A = 1.0
    #        t=0: delta = 1.0 + 0.9 * 1.0 - 0.5 = 1.4;    A = 1.4 + 0.72 * 1.0 = 2.12
    # env 1: t=1: delta = 2.0 + 0.9 * 10.0 - 1.0 = 10.0;  A = 10.0
    #        t=0: delta = 1.4;                             A = 1.4 + 0.72 * 10.0 = 8.6
    expected_adv = t([[2.12, 8.6], [1.0, 10.0]])
    adv, ret = script.compute_gae(rewards, values, zeros, zeros, next_value, next_done, next_terminal, gamma, lam)
    assert torch.allclose(adv, expected_adv, atol=1e-12), adv
    assert torch.allclose(ret, expected_adv + values, atol=1e-12), ret
