"""ppo_atari_temporal.py --arch adaptive / spatiotemporal: the Transformer-XL core's memory (window, episode ends,
replay equivalence), the adaptive span, temporal and spatial maps, bad settings, and tiny end-to-end runs through
the real entry point with checkpoint, resume, pictures and the attention_utils tools."""

import subprocess
import sys

import imageio.v3 as iio
import matplotlib.image
import pytest
import torch
from conftest import REPO, describe, load_module, script_env
from test_topdown import (
    TINY_RUN,
    assert_exact_replay_in_training,
    assert_replay_reproduces_rollout,
    check_tiny_run_and_resume,
    run_topdown,
    tiny_runs,
)

SCRIPT = REPO / "ppo_atari_temporal.py"
MEMORY = 4  # shorter than the test sequences, so the window slides
TEMPORAL = dict(d_model=32, transformer_ff=32, memory_len=MEMORY)
ADAPTIVE = dict(impala_channels=(8, 8, 8), vision_hidden=32, **TEMPORAL)
SPATIOTEMPORAL = dict(conv_channels=16, value_channels=24, mlp_hidden=32, query_hidden=32, **TEMPORAL)
ARCHS = {
    "adaptive": ADAPTIVE,
    "adaptive_span": dict(ADAPTIVE, adaptive_span=True, span_ramp=2, span_init=0.5),
    "adaptive_residual": dict(ADAPTIVE, gating="residual"),
    "spatiotemporal": SPATIOTEMPORAL,
    "spatiotemporal_span": dict(SPATIOTEMPORAL, adaptive_span=True, span_ramp=2, span_init=0.5),
}
TEMPORAL_FLAGS = ["--d-model", "32", "--transformer-ff", "32", "--memory-len", "8"]
FLAGS = {
    "adaptive": ["--arch", "adaptive", "--impala-channels", "8", "8", "8", "--vision-hidden", "32", *TEMPORAL_FLAGS],
    "spatiotemporal": [
        "--arch",
        "spatiotemporal",
        "--conv-channels",
        "16",
        "--value-channels",
        "24",
        "--mlp-hidden",
        "32",
        "--query-hidden",
        "32",
        *TEMPORAL_FLAGS,
        "--adaptive-span",
        "--span-ramp",
        "4",
    ],
}


@pytest.fixture(scope="module")
def temporal():
    return load_module(SCRIPT, "ppo_atari_temporal")


def run_temporal(args, cwd, timeout=600):
    return run_topdown(args, cwd, timeout, script=SCRIPT)


def make(temporal, name, num_actions=5):
    params = ARCHS[name]
    cls = temporal.AdaptiveAgent if name.startswith("adaptive") else temporal.SpatioTemporalAgent
    return cls(num_actions, **params)


def random_inputs(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 4, 84, 84), dtype=torch.uint8, generator=generator)


# ---------------------------------------------------------------------------------------------------
# recurrent correctness: the update path replays the rollout exactly


@pytest.mark.quick
@pytest.mark.parametrize("name", list(ARCHS))
def test_replay_reproduces_rollout_across_episode_ends(temporal, name):
    torch.manual_seed(2)
    assert_replay_reproduces_rollout(make(temporal, name), steps=11)


@pytest.mark.quick
@pytest.mark.parametrize("name", ["adaptive", "spatiotemporal"])
def test_state_is_emptied_after_done(temporal, name):
    torch.manual_seed(4)
    agent = make(temporal, name)
    state = tuple(torch.rand_like(s) + 0.5 for s in agent.initial_state(2, "cpu"))  # all slots valid, nothing zero
    none = torch.full((2,), agent.num_actions, dtype=torch.long)
    with torch.no_grad():
        _, _, _, _, new_state = agent.get_action_and_value(
            random_inputs(2), state, none, torch.zeros(2), torch.tensor([1.0, 0.0])
        )
    for s in new_state:
        assert torch.equal(s[0], torch.zeros_like(s[0]))
        assert s[1].abs().sum() > 0
    valid = new_state[-1] if name == "adaptive" else new_state[3]  # (N, M)
    assert torch.equal(valid[1], torch.ones(MEMORY))


@pytest.mark.quick
def test_memory_window_and_validity(temporal):
    """A step sees itself and at most the M steps before it; a fresh episode sees only its own steps."""
    torch.manual_seed(5)
    core = temporal.TemporalCore(d_model=16, layers=2, heads=2, ff_hidden=16, memory_len=3)
    memory, valid = core.initial_state(1, "cpu")
    x = torch.randn(1, 6, 16)
    with torch.no_grad():
        _, (memory_after, valid_after), weights = core(x, memory, valid, torch.zeros(1, 6), need_weights=True)
    w = weights[0][0]  # (heads, T, M + 1): step t's window is steps t - 3 .. t (negative: the empty memory)
    assert w.shape == (2, 6, 4)
    assert torch.allclose(w.sum(-1), torch.ones(2, 6), atol=1e-6)
    for t in range(6):
        seen = (w[:, t] > 0).any(0).nonzero().flatten() + t - 3  # the steps step t attends to
        assert seen.tolist() == list(range(max(0, t - 3), t + 1)), "an empty slot of the initial state is attended"
    assert torch.equal(valid_after, torch.ones(1, 3))
    assert torch.allclose(memory_after[0, 0], x[0, 3:])  # layer 0's cached inputs are the last 3 embeddings
    # continuing from that state equals one pass over the whole sequence
    with torch.no_grad():
        whole, _, _ = core(torch.cat([x, x.flip(1)], 1), memory, valid, torch.zeros(1, 12))
        second, _, _ = core(x.flip(1), memory_after, valid_after, torch.zeros(1, 6))
    assert torch.allclose(whole[:, 6:], second, atol=1e-5)


@pytest.mark.quick
def test_attention_by_hand(temporal):
    """One step over a full memory, recomputed head by head: softmax_j(q_h . k_h[j] / sqrt(d_h) + b[h, distance j])."""
    torch.manual_seed(8)
    layer = temporal.TransformerXLLayer(8, 2, 8, memory_len=3)
    with torch.no_grad():
        layer.position_bias.normal_()
        x, memory = torch.randn(1, 1, 8), torch.randn(1, 3, 8)
        allowed = torch.ones(1, 1, 4, dtype=torch.bool)
        answers = []  # the attention's output, as the layer computes it (fused, without the weights)
        hook = layer.attention_out.register_forward_hook(lambda module, inputs, output: answers.append(inputs[0]))
        output, weights = layer(x, memory, allowed, need_weights=True)
        output_alone, no_weights = layer(x, memory, allowed)
        hook.remove()
        assert no_weights is None and torch.equal(output, output_alone)
        context = layer.attention_norm(torch.cat([memory, x], 1))[0]  # (4, 8): oldest slot first, current step last
        keys, values = layer.key_value(context).split(8, -1)  # (4, 8) each
        query = layer.query(context[-1])  # (8,)
        for head in range(2):
            part = slice(4 * head, 4 * head + 4)
            logits = keys[:, part] @ query[part] / 2.0 + layer.position_bias[head, [3, 2, 1, 0]]
            assert torch.allclose(weights[0, head, 0], torch.softmax(logits, 0), atol=1e-6)
            # the answer is that softmax's average of the values (eq. 1 of "Attention Is All You Need")
            assert torch.allclose(answers[0][0, 0, part], torch.softmax(logits, 0) @ values[:, part], atol=1e-6)
    # the core gives its layer that window: the M memory slots, oldest first, then the current step
    core = temporal.TemporalCore(8, layers=1, heads=2, ff_hidden=8, memory_len=3)
    core.layers[0] = layer
    with torch.no_grad():
        _, _, core_weights = core(x, memory[:, None], torch.ones(1, 3), torch.zeros(1, 1), need_weights=True)
    assert torch.allclose(core_weights[0], weights, atol=1e-6)


@pytest.mark.quick
@pytest.mark.parametrize("name", ["adaptive", "spatiotemporal", "spatiotemporal_span"])
def test_temporal_maps_sum_to_one_over_valid_steps(temporal, name):
    torch.manual_seed(6)
    agent = make(temporal, name)
    obs = random_inputs(2)
    state = agent.initial_state(2, "cpu")
    maps = agent.attention_maps(obs, state)
    assert maps["temporal"].shape == (2, 4, MEMORY + 1)
    # a fresh episode: all weight on the current step (the last position)
    assert torch.equal(maps["temporal"][..., -1], torch.ones(2, 4))
    # after two steps of one episode: weight on the last 2 slots and the current step only, summing to 1
    none = torch.full((2,), agent.num_actions, dtype=torch.long)
    with torch.no_grad():
        for _ in range(2):
            _, _, _, _, state = agent.get_action_and_value(
                random_inputs(2, seed=7), state, none, torch.zeros(2), torch.zeros(2)
            )
    temporal = agent.attention_maps(obs, state, none, torch.ones(2))["temporal"]
    assert torch.allclose(temporal.sum(-1), torch.ones(2, 4), atol=1e-5)
    assert (temporal[..., : MEMORY - 2] == 0).all() and (temporal[..., MEMORY - 2 :] > 0).all()
    if name.startswith("spatiotemporal"):
        spatial = maps["attention"]
        assert spatial.shape == (2, 4, 17, 17) and (spatial >= 0).all()
        assert torch.allclose(spatial.sum((2, 3)), torch.ones(2, 4), atol=1e-5)
        # the queries come from the temporal core's previous output (the state's last part)
        other = state[:4] + (torch.randn_like(state[4]),)
        assert not torch.allclose(agent.attention_maps(obs, other)["attention"], agent.attention_maps(obs, state)["attention"])
    else:
        assert set(maps) == {"temporal"}


@pytest.mark.quick
def test_adaptive_span_mask(temporal):
    """m_z(x) = clamp((R + z - x) / R, 0, 1), renormalised; the L1 penalty is coef x sum z and pulls z down."""
    layer = temporal.TransformerXLLayer(8, 2, 8, memory_len=8, adaptive_span=True, span_ramp=2, span_init=0.25)
    with torch.no_grad():
        layer.span_fraction.copy_(torch.tensor([0.25, 1.5]))  # z = 2 steps; z = 8 (clamped to the memory)
    distance = torch.arange(9.0)
    mask = layer.span_mask(distance)
    assert torch.allclose(mask[0], torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert torch.equal(mask[1], torch.ones(9))
    # in the attention: head 1 gives nothing beyond z + R, half weight at distance 3
    x, memory = torch.randn(1, 1, 8), torch.randn(1, 8, 8)
    allowed = torch.ones(1, 1, 9, dtype=torch.bool)
    with torch.no_grad():
        _, weights = layer(x, memory, allowed, need_weights=True)  # window slot j is 8 - j steps back
        plain = temporal.TransformerXLLayer(8, 2, 8, memory_len=8)
        plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "span_fraction"})
        _, unmasked = plain(x, memory, allowed, need_weights=True)
    assert (weights[0, 0, 0, :5] == 0).all() and (weights[0, 0, 0, 5:] > 0).all()  # distances 8..4 masked
    expected = unmasked[0, 0, 0] * mask[0].flip(0)
    assert torch.allclose(weights[0, 0, 0], expected / expected.sum(), atol=1e-6)
    assert torch.allclose(weights[0, 1], unmasked[0, 1], atol=1e-6)  # a full span changes nothing
    core = temporal.TemporalCore(
        8, layers=2, heads=2, ff_hidden=8, memory_len=8, adaptive_span=True, span_init=0.5, span_coef=0.1
    )
    loss = core.span_loss()
    assert loss.item() == pytest.approx(0.1 * 4 * 4)  # 2 layers x 2 heads x z = 4 steps
    loss.backward()
    assert all(torch.allclose(layer.span_fraction.grad, torch.full((2,), 0.1 * 8)) for layer in core.layers)
    with torch.no_grad():  # a fraction stepped past 1 (full span) is still pulled back by the penalty
        core.layers[0].span_fraction.fill_(1.01)
    core.zero_grad()
    core.span_loss().backward()
    assert (core.layers[0].span_fraction.grad > 0).all()
    assert torch.equal(core.layers[0].spans(), torch.full((2,), 8.0))
    assert temporal.TemporalCore(8, heads=2, ff_hidden=8).span_loss().item() == 0.0


@pytest.mark.quick
def test_parameter_count_by_hand(temporal):
    d, ff, heads, memory = 128, 256, 4, 64
    layer = (
        (2 * 2 * d) + (d * d + d) + (d * 2 * d + 2 * d) + (d * d + d) + heads * (memory + 1)
    )  # 2 norms, q, kv, out, position bias
    layer += (d * ff + ff) + (ff * d + d) + 2 * (3 * d * d + 2 * d * d + d * d)  # feed-forward, two GRU gates
    impala = 0
    for c_in, c_out in ((4, 16), (16, 32), (32, 32)):
        impala += (c_in * c_out * 9 + c_out) + 4 * (c_out * c_out * 9 + c_out)
    vision = impala + (32 * 11 * 11 * 256 + 256)
    heads_out = (d * 4 + 4) + (d + 1)
    adaptive = temporal.AdaptiveAgent(4)
    assert sum(p.numel() for p in adaptive.parameters()) == vision + ((256 + 1 + 4) * d + d) + 2 * layer + heads_out
    # the spatio-temporal agent has Mott's three-layer query network (on the core's d outputs, not the LSTM's 256)
    topdown = load_module(REPO / "ppo_atari_topdown.py", "ppo_atari_topdown")
    mott = sum(p.numel() for p in topdown.Agent(4).parameters())
    lstm, mott_heads = 2 * 4 * 256 * 256 + 2 * 4 * 256, (256 * 4 + 4) + (256 + 1)
    # spatiotemporal: Mott's agent at core width d, the LSTM replaced by 2 layers
    query_net = (256 * 128 + 128) - (d * 128 + 128)
    core_mlp = (512 * 256 + 256) - (512 * d + d)
    expected = mott - lstm - mott_heads - query_net - core_mlp + 2 * layer + heads_out
    assert sum(p.numel() for p in temporal.SpatioTemporalAgent(4).parameters()) == expected
    # one hidden size (as checkpoints written before the third layer hold it) builds the two-layer network
    two_layers = sum(p.numel() for p in temporal.SpatioTemporalAgent(4, query_hidden=128).parameters())
    assert two_layers == expected - (128 * 128 + 128)


@pytest.mark.quick
def test_query_hidden_of_earlier_checkpoints_passes_the_checks(temporal):
    # an adaptive run's args written when query_hidden was one int (128, then the default) still resume; another
    # value, or any list, was given on purpose and is refused for the arch that has no query network
    temporal.check_args(temporal.Args(arch="adaptive", query_hidden=128))
    for value in (64, (128,)):
        with pytest.raises(SystemExit, match="--query-hidden only apply to --arch spatiotemporal"):
            temporal.check_args(temporal.Args(arch="adaptive", query_hidden=value))
    with pytest.raises(SystemExit, match="--query-hidden 0: give one or more hidden sizes"):
        temporal.check_args(temporal.Args(arch="spatiotemporal", query_hidden=(0,)))


@pytest.mark.quick
def test_variant_names(temporal):
    assert (
        temporal.variant_name(temporal.Args(arch="spatiotemporal", query_mode="fixed", adaptive_span=True))
        == "spatiotemporal_fixed_span"
    )
    assert temporal.variant_name(temporal.Args(arch="spatiotemporal")) == "spatiotemporal"
    assert temporal.variant_name(temporal.Args(arch="adaptive", adaptive_span=True)) == "adaptive_span"
    assert temporal.variant_name(temporal.Args()) == "adaptive"


@pytest.mark.quick
@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(arch="adaptive", query_mode="fixed"), "error: --query-mode only apply to --arch spatiotemporal"),
        (dict(arch="spatiotemporal", impala_channels=(8,)), "error: --impala-channels only apply to --arch adaptive"),
        (dict(arch="adaptive", span_ramp=4), "error: --span-ramp only apply with --adaptive-span"),
        (dict(arch="adaptive", memory_len=0), "error: --memory-len 0: give at least 1"),
        (dict(arch="adaptive", d_model=30), "error: --d-model 30 is not divisible into --transformer-heads 4"),
        (dict(arch="adaptive", adaptive_span=True, span_init=2.0), "--span-init 2.0 in [0, 1]"),
        (dict(arch="spatiotemporal", query_mode="l2norm", key_channels=6), "make them divisible"),
        (dict(num_envs=3, num_minibatches=2, num_steps=16, total_timesteps=96), "whole environments"),
    ],
)
def test_bad_arch_settings(temporal, changes, message):
    """check_args refuses settings the chosen architecture cannot use, in one line."""
    with pytest.raises(SystemExit) as exit_info:
        temporal.check_args(temporal.Args(**changes))
    assert message in str(exit_info.value)


@pytest.mark.quick
def test_good_arch_settings_pass(temporal):
    for changes in (
        dict(),
        dict(arch="spatiotemporal", query_mode="fixed"),
        dict(arch="adaptive", adaptive_span=True, span_ramp=4),
    ):
        temporal.check_args(temporal.Args(**changes))


# ---------------------------------------------------------------------------------------------------
# end to end through the real entry point


@pytest.fixture(scope="module")
def arch_runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory, lambda arch: [*FLAGS[arch], "--save-attention"], script=SCRIPT)


@pytest.mark.parametrize("arch", list(FLAGS))
def test_arch_trains_checkpoints_and_resumes(temporal, arch_runs, arch, tmp_path):
    variant = "spatiotemporal_span" if arch == "spatiotemporal" else arch  # FLAGS: spatiotemporal with --adaptive-span
    # the memory (8 steps) is carried across the rollouts of 16 steps and replayed exactly from the stored one
    checkpoint, agent, scalars = check_tiny_run_and_resume(temporal, arch_runs(arch), variant, tmp_path)
    assert checkpoint["args"]["arch"] == arch and agent.temporal.memory_len == 8
    if arch == "spatiotemporal":  # --adaptive-span: the spans are penalised, so they moved below the whole memory
        spans = [v for _, v in scalars["charts/mean_span"]]
        assert len(spans) == 3 and spans[-1] < 8.0
    (png,) = arch_runs(arch).glob("attention_step_*.png")
    image = matplotlib.image.imread(png)
    assert float(image[..., :3].std()) > 0.01


def test_replay_is_exact_in_training_with_episode_ends(tmp_path):
    """As for mott, with a memory shorter than a rollout."""
    assert_exact_replay_in_training(FLAGS["adaptive"], tmp_path, script=SCRIPT)


def test_video_has_a_temporal_strip(tmp_path):
    proc = run_temporal([*TINY_RUN, *FLAGS["spatiotemporal"], "--total-timesteps", "32", "--capture-video"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (video,) = tmp_path.glob("runs/*/videos/*.mp4")
    frame = iio.imread(video, index=0)
    assert frame.shape == (210 + 4 * 8, 5 * 160, 3)  # frame and 4 spatial heads, a row per temporal head under them
    strip = frame[210:].astype(int)
    assert strip.std() > 0  # the first step has all its weight on itself (right), none on the empty memory


def test_attention_utils_on_an_adaptive_checkpoint(temporal, arch_runs, tmp_path):
    """The tools load an adaptive checkpoint, act from its memory, and know it has no spatial map."""
    from attention_utils.checkpoints import input_saliency, is_recurrent, load_agent, policy_and_value

    path = arch_runs("adaptive") / "step_000000096.cleanrl_model"
    loaded = load_agent(str(path))
    assert is_recurrent(loaded.agent) and loaded.variant == "adaptive"
    assert input_saliency(loaded) is None
    memory = loaded.script.Memory(loaded.agent, 1, "cpu")
    with torch.no_grad():
        memory.act(loaded.agent, random_inputs(1))
        logits, values = policy_and_value(loaded.agent, memory)(random_inputs(3, seed=1))
    assert logits.shape == (3, 4) and values.shape == (3,)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_utils.perturbation",
            "--checkpoint",
            str(path),
            "--frames",
            "1",
            "--spacing",
            "5",
            "--stride",
            "6",
            "--out",
            str(tmp_path / "p.png"),
        ],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, describe(proc)
    assert (tmp_path / "p.png").is_file()


def test_novel_object_on_an_adaptive_checkpoint(arch_runs, tmp_path):
    """An agent without a spatial map: the tool says so, and records the policy's and the memory's response."""
    import csv

    path = arch_runs("adaptive") / "step_000000096.cleanrl_model"
    out = tmp_path / "novel"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_utils.novel_object",
            "--checkpoint",
            str(path),
            "--inject-step",
            "5",
            "--steps",
            "15",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, describe(proc)
    assert "no spatial attention map" in proc.stdout and "nan" not in proc.stdout and "Warning" not in proc.stderr
    rows = list(csv.DictReader(open(f"{out}.csv")))
    before, after = rows[:5], rows[5:]
    assert all(float(r["policy_kl"]) == 0 and float(r["state_change"]) == 0 for r in before)
    assert all(float(r["policy_kl"]) > 0 for r in after)
    assert float(after[1]["state_change"]) > 0  # the memory holds the step that saw the sprite
    assert all(r["attention_on_sprite"] == "nan" for r in rows)


def test_atari_head_refuses_an_agent_without_a_map_before_scoring(arch_runs, tmp_path):
    """Listed after a model it could score, the adaptive agent (no spatial map) is refused in one line before any
    scoring starts, and no table is written."""
    from test_atari_head import write_trial

    write_trial(tmp_path / "breakout")
    spatial = arch_runs("spatiotemporal") / "step_000000096.cleanrl_model"
    adaptive = arch_runs("adaptive") / "step_000000096.cleanrl_model"
    out = tmp_path / "tables"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_utils.atari_head",
            "--dataset",
            str(tmp_path / "breakout"),
            "--game",
            "Breakout",
            "--checkpoints",
            str(spatial),
            str(adaptive),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {adaptive}: adaptive has no spatial attention map, so no saliency to score"
    )
    assert "Breakout spatiotemporal" not in proc.stdout  # nothing was scored
    assert not out.exists()


@pytest.mark.quick
@pytest.mark.parametrize("arch", ["adaptive", "spatiotemporal"])
def test_rgb_frame_input_reaches_the_first_convolution(temporal, arch):
    """--frame-input rgb: both agents' first convolution takes the 3 channels of one frame and they step through a
    sequence of such observations; with the default they take 4 grey frames."""
    sizes = {k: v for k, v in ARCHS[arch].items()}
    flags = dict(arch=arch, d_model=sizes["d_model"], transformer_ff=sizes["transformer_ff"], memory_len=MEMORY)
    for frame_input, channels in (("rgb", 3), ("grey_stack", 4)):
        agent = temporal.make_agent(temporal.Args(frame_input=frame_input, **flags), 4)
        first = agent.stages[0].conv if arch == "adaptive" else agent.conv1
        assert first.weight.shape[1] == channels == agent.in_channels
    steps, envs = 3, 2
    obs = torch.randint(0, 256, (steps * envs, 3, 84, 84), dtype=torch.uint8)
    zeros = torch.zeros(steps * envs)
    rgb_agent = temporal.make_agent(temporal.Args(frame_input="rgb", **flags), 4)
    with torch.no_grad():
        out, _ = rgb_agent.unroll(obs, rgb_agent.initial_state(envs, "cpu"), zeros.long(), zeros, zeros)
    assert out.shape == (steps * envs, sizes["d_model"]) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["adaptive", "spatiotemporal"])
def test_compiled_core_computes_what_the_eager_one_does(temporal, name):
    """--compile: `spatiotemporal` compiles its per-step cell (fused attention included), `adaptive` its `unroll`;
    either way the sequence's outputs, the state after it and the gradients are those of the eager agent."""
    torch.manual_seed(9)
    agent = make(temporal, name)
    steps, envs = 6, 2
    obs = random_inputs(steps * envs, seed=9)
    prev_action, prev_reward = torch.randint(0, 6, (steps * envs,)), torch.randn(steps * envs)
    done = torch.zeros(steps * envs)
    done[5] = 1.0

    def run():
        agent.zero_grad()
        outputs, state = agent.unroll(obs, agent.initial_state(envs, "cpu"), prev_action, prev_reward, done)
        outputs.square().sum().backward()
        return outputs.detach(), state, [p.grad.clone() for p in agent.parameters() if p.grad is not None]

    eager = run()
    agent.compile_core()
    compiled = run()
    assert torch.allclose(compiled[0], eager[0], atol=1e-5)
    assert all(torch.allclose(c, e, atol=1e-5) for c, e in zip(compiled[1], eager[1]))
    assert len(compiled[2]) == len(eager[2])
    for c, e in zip(compiled[2], eager[2]):  # fused kernels sum in another order: equal up to float rounding
        assert (c - e).norm() <= 1e-4 * e.norm() + 1e-6
