"""ppo_atari_topdown.py: the top-down attention agent's maths (spatial basis, attention, what/where), recurrent
replay equivalence, and tiny end-to-end runs of every query mode through the real entry point."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from conftest import REPO, describe, load_checkpoint, load_module, read_evals, read_scalars, run_script, script_env
from test_atari_head import write_trial

from attention_utils.ale import RenderedAtari
from attention_utils.runs import RUN_CONTROL_FIELDS

SCRIPT = REPO / "ppo_atari_topdown.py"
MODES = ["topdown", "fixed", "l2norm"]
SMALL = dict(conv_channels=16, value_channels=24, core_hidden=32, mlp_hidden=32, query_hidden=(32, 32))
SMALL_FLAGS = [
    "--conv-channels",
    "16",
    "--value-channels",
    "24",
    "--core-hidden",
    "32",
    "--mlp-hidden",
    "32",
    "--query-hidden",
    "32",
    "32",
]
TINY_RUN = [
    "--env-id",
    "Breakout",
    "--num-envs",
    "2",
    "--num-steps",
    "16",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--eval-episodes",
    "1",
    "--eval-freq",
    "32",
    "--save-freq",
    "32",
    "--torch-threads",
    "1",
    "--env-threads",
    "1",
    "--precision",
    "fp32",
]  # a tiny run, any architecture
TINY = [*TINY_RUN, *SMALL_FLAGS]


@pytest.fixture(scope="module")
def topdown():
    return load_module(SCRIPT, "ppo_atari_topdown")


def run_topdown(args, cwd, timeout=600, script=SCRIPT):
    """Run a recurrent training script (this one, or ppo_atari_temporal.py) with `args` in `cwd`."""
    return run_script(args, cwd, timeout, script)


def random_inputs(num_envs, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (steps * num_envs, 4, 84, 84), dtype=torch.uint8, generator=generator)


# ---------------------------------------------------------------------------------------------------
# the network


@pytest.mark.quick
def test_spatial_basis(topdown):
    basis = topdown.spatial_basis(17, 17, 4)
    assert basis.shape == (64, 17, 17)
    assert basis.min() >= -1.0 and basis.max() <= 1.0
    flat = basis.flatten(1)  # (64, 289)
    distance = (flat[:, None] - flat[None]).abs().amax(-1)  # (64, 64): largest difference of each pair of channels
    off_diagonal = distance[~torch.eye(64, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3, "two basis channels are (nearly) the same"
    assert flat.std(1).min() > 0.1, "a basis channel is (nearly) constant"
    # eq. 7: channel (u, v) with two even functions is cos(pi u x_i) cos(pi v x_j); here u = 1, v = 2
    x = (torch.arange(17) + 0.5) / 17
    expected = torch.cos(math.pi * 1 * x)[:, None] * torch.cos(math.pi * 2 * x)[None]
    assert torch.allclose(basis[0 * 8 + 1], expected, atol=1e-6)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.quick
def test_parameter_count_by_hand(topdown):
    count = count_parameters(topdown.make_agent(topdown.Args(), 4))
    convs = (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 64 * 9 + 64)  # 8x8 s4, 4x4, 3x3
    conv_lstm = (64 * 512 * 9 + 512) + 128 * 512 * 9  # input and recurrent 3x3 convolutions to 4 x 128 gates
    # section 4: a three-layer query MLP, 256 -> 128 -> 128 -> 4 queries of c_k + c_s = 8 + 64
    query_net = (256 * 128 + 128) + (128 * 128 + 128) + (128 * 4 * 72 + 4 * 72)
    core_input = 4 * (120 + 64) + 4 * 72 + 1 + 4  # answers, queries, previous reward, one-hot previous action
    core = (core_input * 512 + 512) + (512 * 256 + 256) + (2 * 4 * 256 * 256 + 2 * 4 * 256)  # MLP and LSTM(256)
    heads = (256 * 4 + 4) + (256 + 1)
    assert count == convs + conv_lstm + query_net + core + heads == 2_236_101
    # one hidden size: the earlier two-layer query network, 256 -> 128 -> 4 x 72
    two_layers = (256 * 128 + 128) + (128 * 4 * 72 + 4 * 72)
    assert count_parameters(topdown.Agent(4, query_hidden=128)) == count - query_net + two_layers == 2_219_589


@pytest.mark.quick
def test_query_network_by_hand(topdown):
    """A small three-layer query network: its layer shapes, and the queries it gives are the MLP computed by hand."""
    torch.manual_seed(5)
    agent = topdown.Agent(4, **{**SMALL, "query_hidden": (24, 16)})
    shapes = [tuple(m.weight.shape) for m in agent.query_net if isinstance(m, torch.nn.Linear)]
    assert shapes == [(24, 32), (16, 24), (4 * 72, 16)]  # core_hidden 32 -> 24 -> 16 -> 4 heads x (c_k + c_s)
    assert count_parameters(agent.query_net) == (32 * 24 + 24) + (24 * 16 + 16) + (16 * 288 + 288)
    core_h = torch.randn(3, 32)
    first, second, last = (m for m in agent.query_net if isinstance(m, torch.nn.Linear))
    relu = torch.nn.functional.relu
    expected = relu(relu(core_h @ first.weight.T + first.bias) @ second.weight.T + second.bias) @ last.weight.T + last.bias
    assert torch.allclose(agent.queries(core_h), expected.view(3, 4, 72), atol=1e-5)


@pytest.mark.quick
@pytest.mark.parametrize("mode", MODES)
def test_attention_maps_are_spatial_softmaxes(topdown, mode):
    torch.manual_seed(0)
    agent = topdown.Agent(4, mode, **SMALL)
    obs = random_inputs(3, 1)
    state = tuple(torch.randn_like(s) for s in agent.initial_state(3, "cpu"))
    maps = agent.attention_maps(obs, state)
    assert set(maps) == {"attention", "what_where"}
    attention = maps["attention"]
    assert attention.shape == (3, 4, 17, 17)
    assert (attention >= 0).all()
    assert torch.allclose(attention.sum((2, 3)), torch.ones(3, 4), atol=1e-5)
    assert attention.flatten(2).std(-1).min() > 0, "a head's map is uniform"
    if mode == "topdown":  # the queries depend on the core state: another state, other maps
        other = tuple(torch.randn_like(s) for s in state)
        assert not torch.allclose(agent.attention_maps(obs, other)["attention"], attention)
    else:  # bottom-up: the core state does not change the maps
        other = state[:2] + tuple(torch.randn_like(s) for s in state[2:])
        assert torch.allclose(agent.attention_maps(obs, other)["attention"], attention)
    upsampled = topdown.upsample_to_input(attention)
    assert upsampled.shape == (3, 4, 84, 84) and (upsampled >= 0).all()


@pytest.mark.quick
def test_upsampling_lights_the_cells_footprint(topdown):
    grid = torch.zeros(1, 17, 17)
    grid[0, 5, 9] = 1.0
    image = topdown.upsample_to_input(grid)[0]  # (84, 84)
    lit = image > 0
    rows, cols = lit.any(1).nonzero().flatten(), lit.any(0).nonzero().flatten()
    # conv1 (8x8, stride 4) then conv2 (4x4, stride 1): cell (5, 9) is computed from input rows 20..39, cols 36..55
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (20, 39, 36, 55)
    assert lit.sum() == 20 * 20
    assert torch.allclose(topdown.upsample_to_input(torch.ones(1, 17, 17)), torch.ones(1, 84, 84))


@pytest.mark.quick
@pytest.mark.parametrize("mode", MODES)
def test_what_where_shares(topdown, mode):
    torch.manual_seed(1)
    agent = topdown.Agent(4, mode, **SMALL)
    obs = random_inputs(2, 1)
    state = tuple(torch.randn_like(s) for s in agent.initial_state(2, "cpu"))
    share = agent.attention_maps(obs, state)["what_where"]
    assert share.shape == (2, 4, 17, 17)
    assert (share >= 0).all() and (share <= 1).all()
    if mode == "l2norm":
        assert torch.equal(share, torch.ones_like(share))  # no query: the logits are all content
    else:
        assert 0 < share.mean() < 1


@pytest.mark.quick
def test_what_where_by_hand(topdown):
    """A fixed query with no content part asks only "where" (share 0); with no spatial part only "what" (1);
    a query whose two parts give logits of equal size is balanced (0.5)."""
    agent = topdown.Agent(4, "fixed", **SMALL)
    obs = random_inputs(1, 1)
    state = agent.initial_state(1, "cpu")
    with torch.no_grad():
        agent.query_bias.zero_()
        agent.query_bias[0, 8:] = 1.0  # head 1: spatial part only
        agent.query_bias[1, :8] = 1.0  # head 2: content part only
    share = agent.attention_maps(obs, state)["what_where"]
    assert torch.equal(share[0, 0], torch.zeros(17, 17))
    assert torch.equal(share[0, 1], torch.ones(17, 17))
    assert torch.equal(share[0, 2], torch.full((17, 17), 0.5))  # zero query: both parts vanish
    # the shares are |q_k.K| / (|q_k.K| + |q_s.S|): recompute them from the keys and the basis for a mixed query
    with torch.no_grad():
        agent.query_bias[3] = torch.randn(agent.query_size)
        vision_h, _ = agent.conv_lstm(agent.vision_features(obs), state[:2])
        keys = vision_h[0, :8].flatten(1)  # (8, 289)
        content = (agent.query_bias[3, :8] @ keys).abs()
        position = (agent.query_bias[3, 8:] @ agent.basis.flatten(1)).abs()
    expected = (content / (content + position)).view(17, 17)
    assert torch.allclose(agent.attention_maps(obs, state)["what_where"][0, 3], expected, atol=1e-5)


@pytest.mark.quick
def test_bad_query_mode_sizes(topdown):
    with pytest.raises(ValueError, match="divisible"):
        topdown.Agent(4, "l2norm", key_channels=6)
    with pytest.raises(ValueError, match="topdown, fixed, l2norm"):
        topdown.Agent(4, "bottomup")


# ---------------------------------------------------------------------------------------------------
# recurrent correctness: the update path replays the rollout exactly


def rollout_step_by_step(agent, obs, dones, num_envs):
    """What the training loop does: one step at a time, the state carried and reset after an episode's last
    observation, previous action ("none" after a reset) and reward fed back. Returns what the loop stores, and
    the states: states[t] is the state step t starts from (states[-1]: the one after the last step)."""
    steps = obs.shape[0] // num_envs
    state = agent.initial_state(num_envs, "cpu")
    prev_action = torch.full((num_envs,), agent.num_actions, dtype=torch.long)
    prev_reward = torch.zeros(num_envs)
    rewards = torch.tensor([-1.0, 0.0, 1.0])[torch.arange(steps * num_envs) % 3].view(steps, num_envs)
    stored = {k: [] for k in ("actions", "logprobs", "values", "prev_actions", "prev_rewards")}
    states = [state]
    for t in range(steps):
        rows = slice(t * num_envs, (t + 1) * num_envs)
        stored["prev_actions"].append(prev_action)
        stored["prev_rewards"].append(prev_reward)
        with torch.no_grad():
            action, logprob, _, value, state = agent.get_action_and_value(
                obs[rows], state, prev_action, prev_reward, dones[rows]
            )
        stored["actions"].append(action)
        stored["logprobs"].append(logprob)
        stored["values"].append(value.flatten())
        prev_action = torch.where(dones[rows].bool(), agent.num_actions, action)
        prev_reward = rewards[t] * (1.0 - dones[rows])
        states.append(state)
    return {k: torch.cat(v) for k, v in stored.items()}, states


def assert_replay_reproduces_rollout(agent, steps, num_envs=3):
    """The update path (a whole sequence from the state stored at its start) against the training loop's
    step-by-step rollout, with episode ends mid-rollout (twice in a row for env 0): the same log-probabilities,
    values and final state; the same for env subsets (the update's minibatches of whole envs) and from the
    middle of the rollout; and, so that the check can fail, different results when the ends are left out."""
    obs = random_inputs(num_envs, steps, seed=3)
    dones = torch.zeros(steps, num_envs)
    dones[3, 0] = dones[4, 0] = dones[6, 1] = 1.0
    dones = dones.flatten()
    stored, states = rollout_step_by_step(agent, obs, dones, num_envs)
    initial = agent.initial_state(num_envs, "cpu")

    def replay(rows, state, episode_ends):
        with torch.no_grad():
            _, logprobs, _, values, final = agent.get_action_and_value(
                obs[rows],
                state,
                stored["prev_actions"][rows],
                stored["prev_rewards"][rows],
                episode_ends[rows],
                stored["actions"][rows],
            )
        return logprobs, values.flatten(), final

    everything = torch.arange(steps * num_envs)
    logprobs, values, final = replay(everything, initial, dones)
    assert torch.allclose(logprobs, stored["logprobs"], atol=1e-5), (logprobs - stored["logprobs"]).abs().max()
    assert torch.allclose(values, stored["values"], atol=1e-5)
    for a, b in zip(final, states[-1]):  # the state left for the next rollout is the same too
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    envs = [2, 0]
    subset = everything.view(steps, num_envs)[:, envs].flatten()
    assert torch.allclose(replay(subset, tuple(s[envs] for s in initial), dones)[0], stored["logprobs"][subset], atol=1e-5)
    middle = everything[5 * num_envs :]  # from the state the rollout had there (as at the next rollout's start)
    assert torch.allclose(replay(middle, states[5], dones)[0], stored["logprobs"][middle], atol=1e-5)
    wrong = replay(everything, initial, torch.zeros_like(dones))[0]
    after_first_end = everything >= 4 * num_envs
    assert torch.allclose(wrong[~after_first_end], stored["logprobs"][~after_first_end], atol=1e-5)
    assert not torch.allclose(wrong[after_first_end], stored["logprobs"][after_first_end], atol=1e-5)


@pytest.mark.quick
@pytest.mark.parametrize("mode", MODES)
def test_replay_reproduces_rollout_across_episode_ends(topdown, mode):
    torch.manual_seed(2)
    assert_replay_reproduces_rollout(topdown.Agent(5, mode, **SMALL), steps=10)


@pytest.mark.quick
def test_state_is_reset_after_done(topdown):
    torch.manual_seed(4)
    agent = topdown.Agent(4, "topdown", **SMALL)
    state = tuple(torch.randn_like(s) for s in agent.initial_state(2, "cpu"))
    obs = random_inputs(2, 1)
    none = torch.full((2,), 4, dtype=torch.long)
    with torch.no_grad():
        _, _, _, _, new_state = agent.get_action_and_value(obs, state, none, torch.zeros(2), torch.tensor([1.0, 0.0]))
    for s in new_state:
        assert torch.equal(s[0], torch.zeros_like(s[0]))
        assert s[1].abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# Table 1's baselines: IMPALA's residual network, feed-forward or with an LSTM

RESNET_SMALL = dict(impala_channels=(4, 8), resnet_hidden=16)


@pytest.mark.quick
def test_resnet_parameter_counts_by_hand(topdown):
    # IMPALA's sizes, 4 actions: a stage is a 3x3 convolution and two residual blocks of two 3x3 convolutions;
    # the max-pools take 84 -> 42 -> 21 -> 11, and a fully connected layer of 256 follows
    stages = (
        (9 * 4 * 16 + 16) + 4 * (9 * 16 * 16 + 16),
        (9 * 16 * 32 + 32) + 4 * (9 * 32 * 32 + 32),
        (9 * 32 * 32 + 32) + 4 * (9 * 32 * 32 + 32),
    )
    network = sum(stages) + (32 * 11 * 11 * 256 + 256)
    heads = (256 * 4 + 4) + (256 + 1)
    assert count_parameters(topdown.make_agent(topdown.Args(agent="resnet"), 4)) == network + heads == 1_090_517
    lstm = 4 * 256 * (256 + 1 + 4) + 4 * 256 * 256 + 2 * 4 * 256  # input: features, previous reward, one-hot action
    resnet_lstm = topdown.make_agent(topdown.Args(agent="resnet_lstm"), 4)
    assert count_parameters(resnet_lstm) == network + lstm + heads == 1_621_973
    # a small one: two stages of 4 and 8 channels (84 -> 42 -> 21), 16 units, an LSTM of 8
    small = (9 * 4 * 4 + 4) + 4 * (9 * 4 * 4 + 4) + (9 * 4 * 8 + 8) + 4 * (9 * 8 * 8 + 8) + (8 * 21 * 21 * 16 + 16)
    assert count_parameters(topdown.ResNetAgent(4, **RESNET_SMALL)) == small + (16 * 4 + 4) + (16 + 1) == 59_921
    small_lstm = 4 * 8 * (16 + 1 + 4) + 4 * 8 * 8 + 2 * 4 * 8
    count = count_parameters(topdown.ResNetLSTMAgent(4, **RESNET_SMALL, core_hidden=8))
    assert count == small + small_lstm + (8 * 4 + 4) + (8 + 1) == 60_873


@pytest.mark.quick
def test_feedforward_baseline_sees_each_observation_alone(topdown):
    """The Feedforward Baseline's policy and value are its heads on the residual network's output: the state, the
    previous action and reward and the episode ends change nothing, and it has no attention map."""
    torch.manual_seed(6)
    agent = topdown.ResNetAgent(5, **RESNET_SMALL)
    obs = random_inputs(3, 1)
    state = agent.initial_state(3, "cpu")
    with torch.no_grad():
        hidden, new_state = agent.unroll(obs, state, torch.full((3,), 5), torch.zeros(3), torch.zeros(3))
        other, _ = agent.unroll(obs, (torch.randn(3, 1),), torch.tensor([0, 1, 2]), torch.ones(3), torch.ones(3))
        changed, _ = agent.unroll(random_inputs(3, 1, seed=1), state, torch.full((3,), 5), torch.zeros(3), torch.zeros(3))
    assert torch.equal(hidden, other) and not torch.allclose(hidden, changed)
    assert torch.equal(hidden, agent.vision(obs)) and hidden.shape == (3, 16)
    assert len(new_state) == 1 and torch.equal(new_state[0], torch.zeros(3, 1))
    assert agent.attention_maps(obs, state) == {}


@pytest.mark.quick
def test_lstm_baseline_replays_rollout_and_reads_previous_step(topdown):
    torch.manual_seed(7)
    agent = topdown.ResNetLSTMAgent(5, **RESNET_SMALL, core_hidden=8)
    assert_replay_reproduces_rollout(agent, steps=10)
    obs, state = random_inputs(2, 1), tuple(torch.randn_like(s) for s in agent.initial_state(2, "cpu"))
    with torch.no_grad():
        outputs = [
            agent.unroll(obs, state, torch.tensor(action), torch.tensor(reward), torch.zeros(2))[0]
            for action, reward in (([0, 0], [0.0, 0.0]), ([1, 1], [0.0, 0.0]), ([0, 0], [1.0, 1.0]))
        ]
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[0], outputs[2])
    assert agent.attention_maps(obs, state) == {}


# ---------------------------------------------------------------------------------------------------
# end to end through the real entry point


def tiny_runs(tmp_path_factory, flags_of, script=SCRIPT):
    """name -> the run folder of a tiny 96-step run of `script` (checkpoints and evaluations at 32, 64, 96) with the
    architecture flags `flags_of(name)`; each run happens once, on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            cwd = tmp_path_factory.mktemp(f"{script.stem}_{name}")
            proc = run_topdown([*TINY_RUN, *flags_of(name), "--total-timesteps", "96"], cwd, script=script)
            assert proc.returncode == 0, describe(proc)
            (run_dir,) = cwd.glob(f"runs/Breakout__{script.stem}__*__1__*")
            cache[name] = run_dir
        return cache[name]

    return get


@pytest.fixture(scope="module")
def mode_runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory, lambda mode: [*SMALL_FLAGS, "--query-mode", mode])


def check_tiny_run_and_resume(module, run_dir, variant, tmp_path):
    """A tiny run's folder (see `tiny_runs`) of the script `module`: named after `variant`, checkpoints at 32, 64, 96
    that load into the agent its args describe, evaluations and losses logged at each iteration, the rollouts replayed exactly
    (fp32); then a resume from the first checkpoint, copied into a new folder, runs on to 96 with the step
    counter and the evaluations continuing and the weights moving. Returns (checkpoint, agent, scalars)."""
    assert run_dir.name.split("__")[2] == variant
    assert [p.name for p in sorted(run_dir.glob("step_*.cleanrl_model"))] == [
        f"step_{s:09d}.cleanrl_model" for s in (32, 64, 96)
    ]
    checkpoint = load_checkpoint(run_dir / "step_000000096.cleanrl_model")
    script = Path(module.__file__)
    assert checkpoint["variant"] == variant and checkpoint["script"] == script.name
    agent = module.make_agent(module.Args(**checkpoint["args"]), 4)
    agent.load_state_dict(checkpoint["model"])
    _, rows = read_evals(run_dir)
    assert [int(r[0]) for r in rows] == [32, 64, 96]
    scalars = read_scalars(run_dir)
    for tag in ("losses/value_loss", "losses/policy_loss", "charts/SPS", "debug/replay_logprob_error"):
        assert [s for s, _ in scalars[tag]] == [32, 64, 96], tag
    assert max(v for _, v in scalars["debug/replay_logprob_error"]) < 1e-4
    assert max(v for _, v in scalars["debug/replay_value_error"]) < 1e-4

    branch = tmp_path / "runs" / "branch"
    branch.mkdir(parents=True)
    shutil.copy(run_dir / "step_000000032.cleanrl_model", branch)
    proc = run_topdown(
        ["--resume", "runs/branch/step_000000032.cleanrl_model", "--torch-threads", "1", "--env-threads", "1"],
        tmp_path,
        script=script,
    )
    assert proc.returncode == 0, describe(proc)
    final = load_checkpoint(branch / "step_000000096.cleanrl_model")
    learned = lambda saved: {k: v for k, v in saved.items() if k not in RUN_CONTROL_FIELDS}  # noqa: E731
    assert final["global_step"] == 96 and final["iteration"] == 3 and learned(final["args"]) == learned(checkpoint["args"])
    start = load_checkpoint(branch / "step_000000032.cleanrl_model")["model"]
    assert not torch.equal(start["actor.weight"], final["model"]["actor.weight"])
    _, rows = read_evals(branch)
    assert [int(r[0]) for r in rows] == [64, 96]
    return checkpoint, agent, scalars


@pytest.mark.parametrize("mode", MODES)
def test_mode_trains_checkpoints_and_resumes(topdown, mode_runs, mode, tmp_path):
    checkpoint, _, _ = check_tiny_run_and_resume(topdown, mode_runs(mode), mode, tmp_path)
    assert checkpoint["args"]["query_mode"] == mode


def assert_exact_replay_in_training(arch_flags, tmp_path, script=SCRIPT):
    """Long enough rollouts that lives are lost inside them: the first minibatch of every update (no gradient
    step yet) reproduces the rollout's log-probabilities and values. arch_flags: the architecture and its sizes."""
    flags = [
        *TINY_RUN,
        *arch_flags,
        "--num-steps",
        "64",
        "--total-timesteps",
        "768",
        "--eval-freq",
        "100000",
        "--save-freq",
        "100000",
    ]
    proc = run_topdown(flags, tmp_path, script=script)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = tmp_path.glob("runs/*")
    scalars = read_scalars(run_dir)
    assert "charts/episodic_return" in scalars, "no game ended: the rollouts had no episode boundary to test"
    assert len(scalars["debug/replay_logprob_error"]) == 6
    assert max(v for _, v in scalars["debug/replay_logprob_error"]) < 1e-4
    assert max(v for _, v in scalars["debug/replay_value_error"]) < 1e-4


def test_replay_is_exact_in_training_with_episode_ends(tmp_path):
    assert_exact_replay_in_training(SMALL_FLAGS, tmp_path)


def test_save_attention_and_video(tmp_path):
    import imageio.v3 as iio

    proc = run_topdown([*TINY, "--total-timesteps", "32", "--save-attention", "--capture-video"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = tmp_path.glob("runs/*")
    (png,) = run_dir.glob("attention_step_*.png")
    image = matplotlib.image.imread(png)
    assert image.shape[1] > 2 * image.shape[0] / 4, image.shape  # 9 panels per row: frame, 4 heads, 4 what/where
    assert float(image[..., :3].std()) > 0.01
    (video,) = (run_dir / "videos").glob("*.mp4")
    frame = iio.imread(video, index=0)
    assert frame.shape == (210, 5 * 160, 3)  # the frame and one panel per head
    screen = frame[:, :160].astype(int)
    for head in range(1, 5):
        panel = frame[:, 160 * head : 160 * (head + 1)].astype(int)
        assert panel.mean() < screen.mean(), "a head panel is not the frame dimmed outside the attention"
    assert sum(1 for _ in iio.imiter(video)) > 10


def test_eval_only(mode_runs, tmp_path):
    run_dir = tmp_path / "runs" / "copy"
    shutil.copytree(mode_runs("topdown"), run_dir)
    proc = run_topdown(["--resume", run_dir / "step_000000096.cleanrl_model", "--eval-only", "--eval-episodes", "3"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (results,) = run_dir.glob("eval_only_Breakout_step_000000096_3ep.csv")
    rows = results.read_text().splitlines()
    assert rows[0] == "episode,env,return,length" and len(rows) == 4
    assert all(int(r.split(",")[3]) > 0 for r in rows[1:])


@pytest.mark.quick
@pytest.mark.parametrize(
    "extra, words",
    [
        ([*SMALL_FLAGS, "--num-envs", "3", "--num-minibatches", "2"], "whole environments"),
        ([*SMALL_FLAGS, "--query-mode", "l2norm", "--key-channels", "6"], "divisible"),
        ([*SMALL_FLAGS, "--agent", "resnet"], "do not apply to --agent resnet"),
        (["--agent", "resnet_lstm", "--save-attention"], "--agent resnet_lstm has none"),
    ],
)
def test_bad_settings_refused(tmp_path, extra, words):
    """One line on stderr naming what is wrong, before any run folder is made."""
    proc = run_topdown([*TINY_RUN, "--total-timesteps", "96", *extra], tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    assert words in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "runs").exists()


BASELINE_RUN = [
    "--env-id",
    "Breakout",
    "--num-envs",
    "2",
    "--num-steps",
    "16",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--eval-episodes",
    "2",
    "--eval-freq",
    "32",
    "--save-freq",
    "32",
    "--torch-threads",
    "1",
    "--env-threads",
    "1",
    "--total-timesteps",
    "32",
    "--precision",
    "fp32",
    "--impala-channels",
    "8",
    "8",
    "8",
    "--resnet-hidden",
    "32",
]
BASELINES = {"resnet": ("ResNetAgent", ["--capture-video"]), "resnet_lstm": ("ResNetLSTMAgent", ["--core-hidden", "32"])}


@pytest.mark.parametrize("baseline", BASELINES)
def test_baseline_trains_through_the_entry_point(baseline, tmp_path):
    """Table 1's baselines are one flag away and run through the same loop: the run folder and checkpoint are named
    after the baseline, the rollouts are replayed exactly, the tools load the checkpoint and find no spatial map, and
    a video (`--capture-video`, the same drawing as `attention_utils.enjoy`) shows the game alone and says so."""
    import json

    import imageio.v3 as iio

    from attention_utils.checkpoints import input_saliency, load_agent, sequence_saliency
    from attention_utils.results import variant_name

    agent_class, extra = BASELINES[baseline]
    proc = run_topdown([*BASELINE_RUN, "--agent", baseline, *extra], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = tmp_path.glob("runs/*")
    assert run_dir.name.split("__")[2] == baseline
    checkpoint_path = run_dir / "step_000000032.cleanrl_model"
    checkpoint = load_checkpoint(checkpoint_path)
    assert checkpoint["variant"] == baseline and checkpoint["args"]["agent"] == baseline
    assert [int(r[0]) for r in read_evals(run_dir)[1]] == [32]
    scalars = read_scalars(run_dir)
    assert max(v for _, v in scalars["debug/replay_logprob_error"]) < 1e-4
    assert max(v for _, v in scalars["debug/replay_value_error"]) < 1e-4
    assert variant_name(json.loads((run_dir / "args.json").read_text())) == baseline
    loaded = load_agent(str(checkpoint_path))
    assert type(loaded.agent).__name__ == agent_class and loaded.variant == baseline
    assert input_saliency(loaded) is None and sequence_saliency(loaded) is None
    if "--capture-video" in extra:
        (video,) = (run_dir / "videos").glob("*.mp4")
        assert iio.imread(video, index=0).shape == (210, 160, 3)  # the frame, no head panels
        notes = [line for line in proc.stdout.splitlines() if "no attention map" in line]
        assert notes == [f"note: {agent_class} has no attention map (spatial or temporal): videos show the game alone"]


@pytest.mark.quick
def test_old_two_layer_query_checkpoint_still_loads(topdown, tmp_path):
    """A checkpoint written before the query network had three layers: its args hold `query_hidden` as one int and
    lack the fields added since (`agent`, the ResNet sizes), its weights are a two-layer query network's. The tools'
    loader and `--resume --eval-only` rebuild that network, not the new default, and its weights load."""
    from attention_utils.checkpoints import load_agent

    torch.manual_seed(8)
    old_sizes = dict(conv_channels=16, value_channels=24, core_hidden=32, mlp_hidden=32)
    agent = topdown.Agent(4, **old_sizes)
    # the query network as the script built it then: Linear(core_hidden, query_hidden), ReLU, Linear(., heads x 72)
    agent.query_net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4 * 72))
    old_args = {k: v for k, v in vars(topdown.Args()).items() if k not in ("agent", "impala_channels", "resnet_hidden")}
    old_args.update(old_sizes, query_hidden=32)
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    path = run_dir / "step_000000032.cleanrl_model"
    saved = dict(model=agent.state_dict(), optimizer={}, args=old_args, global_step=32, iteration=1)
    torch.save({**saved, "script": "ppo_atari_topdown.py", "variant": "topdown"}, path)

    loaded = load_agent(str(path))
    assert loaded.variant == "topdown"
    assert [tuple(m.weight.shape) for m in loaded.agent.query_net if isinstance(m, torch.nn.Linear)] == [(32, 32), (288, 32)]
    core_h = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.agent.queries(core_h), agent.query_net(core_h).view(2, 4, 72), atol=1e-6)
    flags = ["--eval-only", "--eval-episodes", "1", "--precision", "fp32", "--torch-threads", "1", "--env-threads", "1"]
    proc = run_topdown(["--resume", path, *flags], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "eval-only: topdown at step 32" in proc.stdout
    (results,) = run_dir.glob("eval_only_Breakout_step_000000032_1ep.csv")
    assert len(results.read_text().splitlines()) == 2


def test_compile_reuses_one_compiled_step_and_replays_exactly(topdown, tmp_path):
    """--compile compiles the per-step cell (`compile_core`), not the unrolled sequence: the compiled step computes
    what the eager one does, and a run with it still replays its rollouts exactly."""
    agent = topdown.Agent(5, **SMALL)
    steps, envs = 6, 2
    obs = torch.randint(0, 255, (steps * envs, 4, 84, 84), dtype=torch.uint8)
    prev_action, prev_reward = torch.randint(0, 6, (steps * envs,)), torch.randn(steps * envs)
    done = torch.zeros(steps * envs)
    done[5] = 1.0
    with torch.no_grad():
        eager, _ = agent.unroll(obs, agent.initial_state(envs, "cpu"), prev_action, prev_reward, done)
        agent.compile_core()
        assert hasattr(agent.step, "_torchdynamo_orig_callable")  # the instance's step is the compiled one
        compiled, _ = agent.unroll(obs, agent.initial_state(envs, "cpu"), prev_action, prev_reward, done)
    assert torch.allclose(compiled, eager, atol=1e-5)
    assert_exact_replay_in_training([*SMALL_FLAGS, "--compile"], tmp_path)


@pytest.mark.quick
def test_rendered_rgb_observation_is_the_colour_of_the_grey_one(topdown):
    """--frame-input rgb: one (3, 84, 84) RGB frame. envpool's and the rendered game's (videos, pictures, tools) are the
    colour version of the newest grey frame the same game gives (ALE's grey is the palette's luminance)."""
    luminance = lambda rgb: 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # noqa: E731
    grey_game, colour_game = RenderedAtari("Breakout", 7), RenderedAtari("Breakout", 7, rgb=True)
    grey, colour = grey_game.reset(), colour_game.reset()
    for action in [1, 2, 2, 3, 0, 1] * 5:
        (grey, _, _), (colour, _, _) = grey_game.step(action), colour_game.step(action)
    assert grey.shape == (4, 84, 84) and colour.shape == (3, 84, 84) and colour.dtype == torch.uint8
    assert (luminance(colour.float()) - grey[-1].float()).abs().mean() < 1.5
    assert (colour[0] != colour[2]).any()  # in colour indeed
    pools = [topdown.make_env("Breakout", 1, 7, False, 1, rgb) for rgb in (False, True)]
    (grey, _), (colour, _) = pools[0].reset(), pools[1].reset()
    assert grey.shape == (1, 4, 84, 84) and colour.shape == (1, 3, 84, 84)
    assert pools[1].observation_space.shape == (3, 84, 84)
    assert abs(luminance(colour[0].astype(float)) - grey[0, -1]).mean() < 1.5


def test_rgb_frame_input_trains_resumes_and_the_tools_follow(topdown, tmp_path):
    """--frame-input rgb (the paper's input): conv1 takes the 3 channels of one frame; the run replays its rollouts
    exactly, checkpoints and resumes; its attention pictures and video come from rendered games that give the same
    observation; a tool plays it (perturbation), and the tools built on grey frames refuse it in one line."""
    flags = [*TINY_RUN, *SMALL_FLAGS, "--frame-input", "rgb", "--total-timesteps", "96", "--save-attention"]
    (tmp_path / "first").mkdir()
    proc = run_topdown([*flags, "--capture-video"], tmp_path / "first")
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = (tmp_path / "first").glob("runs/*")
    checkpoint, agent, _ = check_tiny_run_and_resume(topdown, run_dir, "topdown", tmp_path)
    assert checkpoint["args"]["frame_input"] == "rgb" and agent.conv1.weight.shape[1] == 3
    assert list(run_dir.glob("attention_step_*.png")) and list((run_dir / "videos").glob("*.mp4"))
    path = str(run_dir / "step_000000096.cleanrl_model")

    def tool(name, *args):
        command = [sys.executable, "-m", f"attention_utils.{name}", "--checkpoint", path, *args]
        return subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)

    proc = tool("perturbation", "--frames", "1", "--spacing", "5", "--stride", "6", "--out", str(tmp_path / "p.png"))
    assert proc.returncode == 0, describe(proc)
    assert (tmp_path / "p.png").is_file()
    for name in ("objects", "novel_object"):
        proc = tool(name)
        last = proc.stderr.strip().splitlines()[-1]  # after the emulator's banner
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
        assert last.startswith("error: ") and last.endswith("--frame-input rgb (one RGB frame per step)"), last
    # Atari-HEAD's frames are made into grey stacks too: the reader refuses the RGB agent before scoring anything
    write_trial(tmp_path / "head" / "trials")
    command = [sys.executable, "-m", "attention_utils.atari_head", "--dataset", str(tmp_path / "head"), "--game", "Breakout"]
    command += ["--checkpoints", path, "--out", str(tmp_path / "tables")]
    proc = subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    assert last.startswith("error: atari_head works on agents that see 4 grey frames"), last
    assert last.endswith("--frame-input rgb (one RGB frame per step)"), last
