"""ppo_atari_timesformer.py: the divided space-time ViT (parameter count, attention maps, rollout, upsampling)
and tiny end-to-end runs through the real entry point (checkpoints, resume, attention picture, video)."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    BATCH,
    BREAKOUT_ACTIONS,
    CHECKPOINT_KEYS,
    EVALS_HEADER,
    TINY,
    checkpoint_files,
    checkpoint_step,
    describe,
    load_checkpoint,
    load_module,
    read_evals,
    read_scalars,
    script_env,
)

SCRIPT = Path(__file__).resolve().parents[1] / "ppo_atari_timesformer.py"
# a small network that still has several heads and blocks
SMALL = {"embed_dim": 16, "heads": 2, "depth": 2, "mlp_ratio": 2, "patch_size": 12}
SMALL_FLAGS = ["--embed-dim", "16", "--heads", "2", "--depth", "2", "--mlp-ratio", "2"]
SMALL_VARIANT = "d16_h2_l2_m2_p12"
TOTAL = 3 * BATCH  # evaluations and checkpoints at 32, 64, 96
STEPS = [BATCH, 2 * BATCH, 3 * BATCH]


@pytest.fixture(scope="module")
def tsf():
    return load_module(SCRIPT, "ppo_atari_timesformer")


def run_tsf(args, cwd):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=600
    )


def assert_ok(proc):
    assert proc.returncode == 0, describe(proc)


def small_agent(tsf, seed=0, **sizes):
    torch.manual_seed(seed)
    return tsf.Agent(BREAKOUT_ACTIONS, **{**SMALL, **sizes})


def observations(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=generator)


# ---------------------------------------------------------------------------------------------------
# the network


def hand_count(d, heads, depth, ratio, patch, actions=BREAKOUT_ACTIONS, frames=4):
    """Parameters of the network, counted layer by layer (heads change no count)."""
    tokens_per_frame = (84 // patch) ** 2
    embedding = patch * patch * d + d  # one Linear(patch^2 -> D) on every patch of every frame
    cls_and_positions = d + tokens_per_frame * d + frames * d  # CLS, space positions, time positions
    attention = (d * 3 * d + 3 * d) + (d * d + d)  # q, k, v projection + output projection
    mlp = (d * ratio * d + ratio * d) + (ratio * d * d + d)
    block = 3 * 2 * d + 2 * attention + mlp  # 3 LayerNorms (scale, shift), time + space attention, MLP
    heads_out = 2 * d + (d * actions + actions) + (d + 1)  # final LayerNorm, policy, value
    return embedding + cls_and_positions + depth * block + heads_out


@pytest.mark.quick
def test_parameter_count_defaults(tsf):
    args = tsf.Args()
    agent = tsf.make_agent(args, BREAKOUT_ACTIONS)
    assert sum(p.numel() for p in agent.parameters()) == hand_count(
        args.embed_dim, args.heads, args.depth, args.mlp_ratio, args.patch_size
    )


@pytest.mark.quick
def test_parameter_count_by_hand_d16():
    # D = 16, 2 heads, 2 blocks, MLP ratio 2, 12x12 patches (49 per frame), 4 actions:
    #   patch embedding 144*16 + 16 = 2,320; CLS 16; space positions 49*16 = 784; time positions 4*16 = 64
    #   per block: LayerNorms 3*32 = 96; time attention 16*48 + 48 + 16*16 + 16 = 1,088; space attention 1,088;
    #   MLP 16*32 + 32 + 32*16 + 16 = 1,072 -> 3,344, two blocks 6,688
    #   final LayerNorm 32; policy 16*4 + 4 = 68; value 17
    expected = 2_320 + 16 + 784 + 64 + 6_688 + 32 + 68 + 17
    assert expected == 9_989
    assert hand_count(16, 2, 2, 2, 12) == expected


@pytest.mark.quick
def test_parameter_count_matches_network(tsf):
    for sizes in [SMALL, {**SMALL, "patch_size": 28, "depth": 1, "mlp_ratio": 4}, {**SMALL, "embed_dim": 24, "heads": 3}]:
        agent = tsf.Agent(BREAKOUT_ACTIONS, **sizes)
        count = hand_count(sizes["embed_dim"], sizes["heads"], sizes["depth"], sizes["mlp_ratio"], sizes["patch_size"])
        assert sum(p.numel() for p in agent.parameters()) == count, sizes
    assert sum(p.numel() for p in tsf.Agent(BREAKOUT_ACTIONS, **SMALL).parameters()) == 9_989


@pytest.mark.quick
def test_heads_must_divide_embedding(tsf):
    with pytest.raises(ValueError, match="heads"):
        tsf.Agent(BREAKOUT_ACTIONS, embed_dim=16, heads=3)


@pytest.mark.quick
def test_forward_shapes_and_distribution(tsf):
    agent = small_agent(tsf)
    obs = observations(5)
    action, logprob, entropy, value = agent.get_action_and_value(obs)
    assert action.shape == logprob.shape == entropy.shape == (5,)
    assert value.shape == (5, 1) and agent.get_value(obs).shape == (5, 1)
    assert ((action >= 0) & (action < BREAKOUT_ACTIONS)).all()
    # policy init std 0.01: nearly uniform over the 4 actions
    torch.testing.assert_close(entropy, torch.full((5,), math.log(BREAKOUT_ACTIONS)), atol=1e-3, rtol=0)
    _, logprob_again, _, _ = agent.get_action_and_value(obs, action)
    torch.testing.assert_close(logprob_again, logprob)


@pytest.mark.quick
def test_every_frame_reaches_the_output(tsf):
    """Changing one patch of any one frame changes the CLS output (time and space attention mix them in)."""
    agent = small_agent(tsf)
    obs = observations(1)
    base = agent.hidden(obs)
    for frame in range(4):
        changed = obs.clone()
        changed[0, frame, 36:48, 36:48] = 255 - changed[0, frame, 36:48, 36:48]
        assert not torch.allclose(agent.hidden(changed), base), frame


@pytest.mark.quick
def test_bf16_autocast_close_to_fp32(tsf):
    agent = small_agent(tsf)
    obs = observations(4)
    with torch.no_grad():
        fp32 = agent.get_value(obs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = agent.get_value(obs)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.1, rtol=0.05)


def reference_attention(x_queries, x_keys, qkv, out, heads):
    """Multi-head attention written out: queries (Lq, D) and keys/values (Lk, D), already normalised."""
    d = x_queries.shape[-1]
    dh = d // heads
    q = x_queries @ qkv.weight[:d].T + qkv.bias[:d]
    k = x_keys @ qkv.weight[d : 2 * d].T + qkv.bias[d : 2 * d]
    v = x_keys @ qkv.weight[2 * d :].T + qkv.bias[2 * d :]
    outputs, weights = [], []
    for head in range(heads):
        cols = slice(head * dh, (head + 1) * dh)
        w = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(dh), dim=-1)  # (Lq, Lk)
        outputs.append(w @ v[:, cols])
        weights.append(w)
    return torch.cat(outputs, -1) @ out.weight.T + out.bias, torch.stack(weights)


@pytest.mark.quick
def test_block_against_a_reference_written_out(tsf):
    """One divided space-time block, token by token: time attention of each patch over its 4 frames, then per
    frame the patches attend to [CLS, the frame's patches] and the CLS to the frame's patches, the CLS's 4
    per-frame outputs averaged, then the MLP on every token (pre-LayerNorm and residuals throughout)."""
    torch.manual_seed(0)
    d, heads, t, p = 8, 2, 4, 9
    block = tsf.DividedSpaceTimeBlock(d, heads, 2)
    cls, patches = torch.randn(2, 1, d), torch.randn(2, t, p, d)
    with torch.no_grad():
        got_cls, got_patches, got_weights = block(cls, patches)
        after_time = patches.clone()
        for n in range(2):
            for j in range(p):
                x = block.norm_time(patches[n, :, j])  # (T, D): patch j in the 4 frames
                out, w = reference_attention(x, x, block.time_qkv, block.time_out, heads)
                after_time[n, :, j] += out
                torch.testing.assert_close(got_weights["time"][n * p + j], w)
        after_space, new_cls = after_time.clone(), cls.clone()
        for n in range(2):
            cls_outputs = []
            for f in range(t):
                tokens = block.norm_space(torch.cat([cls[n], after_time[n, f]]))  # (1 + P, D): [CLS, frame f's patches]
                out, w = reference_attention(tokens[1:], tokens, block.space_qkv, block.space_out, heads)
                after_space[n, f] += out
                torch.testing.assert_close(got_weights["space"][n * t + f], w)
                out, w = reference_attention(tokens[:1], tokens[1:], block.space_qkv, block.space_out, heads)
                cls_outputs.append(out)
                torch.testing.assert_close(got_weights["cls"][n, :, f], w[:, 0])
            new_cls[n] += torch.stack(cls_outputs).mean(0)
        expected_patches = after_space + block.mlp(block.norm_mlp(after_space))
        expected_cls = new_cls + block.mlp(block.norm_mlp(new_cls))
    torch.testing.assert_close(got_patches, expected_patches)
    torch.testing.assert_close(got_cls, expected_cls)


# ---------------------------------------------------------------------------------------------------
# attention weights, maps and rollout


@pytest.mark.quick
def test_attention_weights_are_softmaxes(tsf):
    agent = small_agent(tsf)
    n, heads = 3, SMALL["heads"]
    with torch.no_grad():
        _, weights = agent.encode(observations(n))
    assert len(weights) == SMALL["depth"]
    for block in weights:
        assert block["time"].shape == (n * 49, heads, 4, 4)  # per patch: frames attend to frames
        assert block["space"].shape == (n * 4, heads, 49, 50)  # per frame: patches attend to [CLS, patches]
        assert block["cls"].shape == (n, heads, 4, 49)  # the CLS query, per frame
        for w in block.values():
            assert (w >= 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


@pytest.mark.quick
def test_attention_maps_shapes_and_sums(tsf):
    agent = small_agent(tsf)
    obs = observations(3)
    maps = agent.attention_maps(obs)
    assert set(maps) == {"cls", "rollout"}
    for name in ("cls", "rollout"):
        assert maps[name].shape == (3, 4, 7, 7) and maps[name].dtype == torch.float32, name
        assert (maps[name] >= 0).all(), name
    torch.testing.assert_close(maps["cls"].sum((2, 3)), torch.ones(3, 4))  # a softmax over each frame's 49 patches
    torch.testing.assert_close(maps["rollout"].sum((1, 2, 3)), torch.ones(3))  # over all 4 x 49 patch tokens
    # the CLS map is the last block's CLS attention, heads averaged
    _, weights = agent.encode(obs)
    torch.testing.assert_close(maps["cls"], weights[-1]["cls"].detach().mean(1).view(3, 4, 7, 7))
    # the same maps under autocast (computed in fp32 inside)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = agent.attention_maps(obs)
    torch.testing.assert_close(under_autocast["cls"], maps["cls"])


@pytest.mark.quick
def test_rollout_rows_sum_to_one(tsf):
    agent = small_agent(tsf)
    with torch.no_grad():
        rollout = agent.rollout(agent.encode(observations(2))[1])
    assert rollout.shape == (2, 197, 197)
    assert (rollout >= 0).all()
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 197))
    matrices = agent.attention_matrices(agent.encode(observations(2))[1])
    assert len(matrices) == 2 * SMALL["depth"]
    for matrix in matrices:
        torch.testing.assert_close(matrix.sum(-1), torch.ones(2, 197))


@pytest.mark.quick
def test_attention_matrices_layout_by_hand(tsf):
    """The token-level matrices built entry by entry from the documented layout: token 0 = CLS, token
    1 + t*P + p = patch p of frame t (3x3 patches of 28 pixels here, P = 9)."""
    agent = small_agent(tsf, patch_size=28, depth=1)
    with torch.no_grad():
        weights = agent.encode(observations(2))[1]
    time_matrix, space_matrix = agent.attention_matrices(weights)
    time_w = weights[0]["time"].mean(1).view(2, 9, 4, 4)  # [n, patch, query frame, key frame]
    space_w = weights[0]["space"].mean(1).view(2, 4, 9, 10)  # [n, frame, query patch, key CLS/patch]
    cls_w = weights[0]["cls"].mean(1)  # [n, frame, patch]
    expected_time, expected_space = torch.zeros(2, 37, 37), torch.zeros(2, 37, 37)
    for n in range(2):
        expected_time[n, 0, 0] = 1.0
        for t in range(4):
            for p in range(9):
                i = 1 + t * 9 + p
                expected_space[n, 0, i] = cls_w[n, t, p] / 4
                expected_space[n, i, 0] = space_w[n, t, p, 0]
                for s in range(4):
                    expected_time[n, i, 1 + s * 9 + p] = time_w[n, p, t, s]
                for q in range(9):
                    expected_space[n, i, 1 + t * 9 + q] = space_w[n, t, p, 1 + q]
    torch.testing.assert_close(time_matrix, expected_time)
    torch.testing.assert_close(space_matrix, expected_space)


@pytest.mark.quick
def test_rollout_map_one_block_by_hand(tsf):
    """One block: R = (0.5 S + 0.5 I)(0.5 T + 0.5 I), so the CLS row on patch (s, p) is
    sum_t 0.5 cls[t, p] / 4 * 0.5 (time[p, t, s] + [t == s]); the map renormalises it over the patches."""
    agent = small_agent(tsf, depth=1)
    obs = observations(2)
    with torch.no_grad():
        weights = agent.encode(obs)[1]
    time_w = weights[0]["time"].mean(1).view(2, 49, 4, 4)  # [n, p, t, s]
    cls_w = weights[0]["cls"].mean(1)  # [n, t, p]
    row = torch.einsum("ntp,npts->nsp", 0.5 * cls_w / 4, 0.5 * (time_w + torch.eye(4)))  # (n, s, p)
    expected = row / row.sum((1, 2), keepdim=True)
    torch.testing.assert_close(agent.attention_maps(obs)["rollout"], expected.view(2, 4, 7, 7))


@pytest.mark.quick
@pytest.mark.parametrize("patch,grid", [(12, 7), (28, 3), (7, 12)])
def test_hot_token_lights_exactly_its_patch(tsf, patch, grid):
    for i, j in [(0, 0), (grid // 2, grid - 1), (grid - 1, 1)]:
        heat = torch.zeros(2, grid, grid)
        heat[1, i, j] = 1.0
        lit = tsf.upsample_to_input(heat, patch)
        assert lit.shape == (2, 84, 84)
        expected = torch.zeros(2, 84, 84)
        expected[1, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] = 1.0
        assert torch.equal(lit, expected), (patch, i, j)
    # per-frame maps (N, 4, g, g): each frame's hot token lights its patch in that frame only
    heat = torch.zeros(1, 4, grid, grid)
    heat[0, 2, grid - 1, 0] = 1.0
    lit = tsf.upsample_to_input(heat, patch)
    expected = torch.zeros(1, 4, 84, 84)
    expected[0, 2, 84 - patch :, :patch] = 1.0
    assert lit.shape == (1, 4, 84, 84) and torch.equal(lit, expected)


@pytest.mark.quick
def test_maps_upsample_to_the_input(tsf):
    agent = small_agent(tsf)
    maps = agent.attention_maps(observations(2))
    lit = tsf.upsample_to_input(maps["cls"], agent.patch_size)
    assert lit.shape == (2, 4, 84, 84)
    # a patch's 144 pixels carry its token's weight: the sums per frame are 144 x 1
    torch.testing.assert_close(lit.sum((2, 3)), torch.full((2, 4), 144.0))


# ---------------------------------------------------------------------------------------------------
# end to end through the real entry point


def run_dirs(cwd, variant=SMALL_VARIANT, seed=1):
    return sorted(Path(cwd).glob(f"runs/Breakout__ppo_atari_timesformer__{variant}__{seed}__*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 3-iteration run (checkpoints and evaluations at 32, 64, 96): (cwd, run folder, process)."""
    cwd = tmp_path_factory.mktemp("timesformer")
    proc = run_tsf([*TINY, *SMALL_FLAGS, "--total-timesteps", TOTAL], cwd)
    assert_ok(proc)
    (run_dir,) = run_dirs(cwd)
    return cwd, run_dir, proc


def test_trains_end_to_end(tsf, trained):
    _, run_dir, proc = trained
    assert re.fullmatch(rf"Breakout__ppo_atari_timesformer__{SMALL_VARIANT}__1__\d+(-\d+)?", run_dir.name)
    saved = json.loads((run_dir / "args.json").read_text())
    assert {k: saved[k] for k in SMALL} == SMALL
    assert saved["total_timesteps"] == TOTAL and saved["batch_size"] == BATCH
    header, rows = read_evals(run_dir)
    assert header == EVALS_HEADER
    assert [int(r[0]) for r in rows] == STEPS
    for row in rows:
        returns = [float(x) for x in row[3].split(";")]
        assert float(row[1]) == pytest.approx(np.mean(returns), abs=1e-3)
    scalars = read_scalars(run_dir)
    for tag in ("losses/value_loss", "losses/policy_loss", "eval/mean_return", "charts/SPS", "perf/update_s"):
        assert [s for s, _ in scalars[tag]] == STEPS, tag
        assert all(math.isfinite(v) for _, v in scalars[tag]), (tag, scalars[tag])
    ckpts = checkpoint_files(run_dir)
    assert [checkpoint_step(p) for p in ckpts] == STEPS
    for path in ckpts:
        ckpt = load_checkpoint(path)
        assert CHECKPOINT_KEYS <= set(ckpt)
        assert ckpt["variant"] == SMALL_VARIANT and ckpt["global_step"] == checkpoint_step(path)
        agent = tsf.Agent(BREAKOUT_ACTIONS, **SMALL)
        agent.load_state_dict(ckpt["model"])  # strict: exactly these sizes
        torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5).load_state_dict(ckpt["optimizer"])
    first, last = load_checkpoint(ckpts[0])["model"], load_checkpoint(ckpts[-1])["model"]
    for name in ("patch_embed.weight", "blocks.1.space_qkv.weight", "space_position", "actor.weight"):
        assert not torch.equal(first[name], last[name]), f"{name} did not change between checkpoints"
    # the run's checkpoint gives working attention maps
    agent = tsf.Agent(BREAKOUT_ACTIONS, **SMALL)
    agent.load_state_dict(load_checkpoint(ckpts[-1])["model"])
    maps = agent.attention_maps(observations(2))
    torch.testing.assert_close(maps["cls"].sum((2, 3)), torch.ones(2, 4))


def test_resume_from_checkpoint_copied_into_new_folder(trained, tmp_path):
    _, run_dir, _ = trained
    original = read_scalars(run_dir)
    branch = tmp_path / "runs" / "branch"
    branch.mkdir(parents=True)
    shutil.copy(run_dir / f"step_{BATCH:09d}.cleanrl_model", branch)
    # the sizes and the preset on the command line differ from the checkpoint's: they are ignored
    sizes = ["--embed-dim", "40", "--depth", "3", "--preset", "gpu", "--torch-threads", "1", "--env-threads", "1"]
    proc = run_tsf(["--resume", f"runs/branch/step_{BATCH:09d}.cleanrl_model", *sizes], tmp_path)
    assert_ok(proc)
    notice = next(line for line in proc.stdout.splitlines() if "ignoring command-line" in line)
    assert all(name in notice for name in ("embed_dim", "depth", "preset", "heads", "mlp_ratio")), describe(proc)
    header, rows = read_evals(branch)
    assert [int(r[0]) for r in rows] == STEPS[1:]
    scalars = read_scalars(branch)
    for tag in ("charts/learning_rate", "charts/clip_coef"):  # the schedules continue where the checkpoint left them
        assert scalars[tag] == [(s, v) for s, v in original[tag] if s > BATCH], tag
    ckpts = checkpoint_files(branch)
    assert [checkpoint_step(p) for p in ckpts] == STEPS
    final = load_checkpoint(ckpts[-1])
    assert final["global_step"] == TOTAL and {k: final["args"][k] for k in SMALL} == SMALL
    assert final["args"]["preset"] == "cpu"
    assert final["variant"] == SMALL_VARIANT
    start = load_checkpoint(ckpts[0])["model"]
    assert not torch.equal(start["blocks.0.time_qkv.weight"], final["model"]["blocks.0.time_qkv.weight"])


def test_eval_only(trained, tmp_path):
    _, run_dir, _ = trained
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(run_dir, copy)
    proc = run_tsf(["--resume", copy / f"step_{TOTAL:09d}.cleanrl_model", "--eval-only", "--eval-episodes", "3"], tmp_path)
    assert_ok(proc)
    assert SMALL_VARIANT in proc.stdout, describe(proc)
    (results,) = copy.glob(f"eval_only_Breakout_step_{TOTAL:09d}_3ep.csv")
    rows = results.read_text().splitlines()
    assert rows[0] == "episode,env,return,length" and len(rows) == 4
    assert all(int(r.split(",")[3]) > 0 for r in rows[1:])


@pytest.fixture(scope="module")
def extras_run(tmp_path_factory):
    """One iteration with the attention picture and a video of the evaluation episode."""
    cwd = tmp_path_factory.mktemp("timesformer_extras")
    proc = run_tsf([*TINY, *SMALL_FLAGS, "--total-timesteps", BATCH, "--save-attention", "--capture-video"], cwd)
    assert_ok(proc)
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_save_attention_png(extras_run):
    import matplotlib.image as mpimg

    pngs = sorted(extras_run.glob("attention_step_*.png"))
    assert [p.name for p in pngs] == [f"attention_step_{BATCH:09d}.png"]
    image = mpimg.imread(pngs[0])
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    height, width = image.shape[:2]
    # 4 states (rows) x 5 panels (the 4 frames with CLS attention, the screen with the rollout)
    assert width > 600 and height > 600, image.shape
    assert float(image[..., :3].std()) > 0.01, "attention picture is blank"


def test_capture_video_mp4(extras_run):
    import imageio.v3 as iio

    videos = sorted((extras_run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == [f"eval_step_{BATCH:09d}.mp4"]
    frame = iio.imread(videos[0], index=0)
    # the screen | the screen under the CLS attention on the newest frame | under the rollout
    assert frame.shape == (210, 480, 3) and frame.dtype == np.uint8, frame.shape
    screen, cls_panel, rollout_panel = (frame[:, i * 160 : (i + 1) * 160].astype(int) for i in range(3))
    assert np.abs(screen - cls_panel).mean() > 10, "no attention drawn on the middle panel"
    assert np.abs(screen - rollout_panel).mean() > 10, "no rollout drawn on the right panel"
    assert sum(1 for _ in iio.imiter(videos[0])) > 10


@pytest.mark.quick
def test_video_frame_directly(tsf):
    from attention_utils.pictures import timesformer as pictures

    agent = small_agent(tsf)
    rgb = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as record_video calls it
        frame = pictures.video_frame(tsf, agent, rgb, observations(1)[0])
    assert frame.shape == (210, 480, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[:, :160], rgb)


# ---------------------------------------------------------------------------------------------------
# bad sizes: refused before anything starts


@pytest.mark.quick
def test_heads_not_dividing_embedding_refused(tmp_path):
    proc = run_tsf([*TINY, "--embed-dim", "16", "--heads", "3", "--total-timesteps", BATCH], tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--heads 3" in lines[0] and "--embed-dim 16" in lines[0], describe(proc)
    assert not (tmp_path / "runs").exists()


@pytest.mark.quick
def test_patch_size_must_divide_84(tmp_path):
    proc = run_tsf([*TINY, "--patch-size", "5", "--total-timesteps", BATCH], tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    assert "12" in proc.stderr and "28" in proc.stderr  # tyro lists the valid sizes
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------
# position encodings (--pos-encoding) and size presets (--preset)

SINUSOIDAL_FLAGS = ["--pos-encoding", "sinusoidal", "--preset", "gpu", "--embed-dim", "16", "--heads", "2", "--depth", "1"]
# the gpu preset gives the MLP ratio (4) and the patch size (12); the command line the rest
SINUSOIDAL_VARIANT = "d16_h2_l1_m4_p12_sin"


@pytest.mark.quick
def test_sinusoidal_table_by_hand(tsf):
    # dim 4: the pairs (0, 1) and (2, 3) have the frequencies 1 / 10000^(0/4) = 1 and 1 / 10000^(2/4) = 1/100
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
        ]
    )
    torch.testing.assert_close(tsf.sinusoidal_table(3, 4), expected)
    # an odd dim ends with a sine: dim 3, position 1 -> [sin 1, cos 1, sin(1 / 10000^(2/3))]
    torch.testing.assert_close(
        tsf.sinusoidal_table(2, 3)[1], torch.tensor([math.sin(1), math.cos(1), math.sin(10000 ** (-2 / 3))])
    )


@pytest.mark.quick
def test_pos_encoding_reaches_the_network(tsf):
    """Both encodings are learned parameters with the same keys and count; they differ in where they start, and the
    sinusoidal start is what the patch tokens get: on an all-black frame a token is the embedding's bias + S[p] + T[t]."""
    agents = {}
    for encoding in ("gaussian", "sinusoidal"):
        torch.manual_seed(0)
        agents[encoding] = tsf.make_agent(tsf.Args(pos_encoding=encoding), BREAKOUT_ACTIONS)
    gaussian, sinusoidal = agents["gaussian"], agents["sinusoidal"]
    assert gaussian.state_dict().keys() == sinusoidal.state_dict().keys()
    counts = {name: sum(p.numel() for p in agent.parameters()) for name, agent in agents.items()}
    assert counts == {"gaussian": hand_count(16, 1, 1, 2, 12), "sinusoidal": hand_count(16, 1, 1, 2, 12)}
    for agent in agents.values():
        trainable = {name for name, p in agent.named_parameters() if p.requires_grad}
        assert {"space_position", "time_position"} <= trainable
    # where they start: the table (entries by hand: D = 16, dims 2 and 3 have the frequency 1 / 10000^(2/16)), and
    # N(0, 0.02^2) for gaussian
    space, time_ = sinusoidal.space_position.detach(), sinusoidal.time_position.detach()
    assert space.shape == (49, 16) and time_.shape == (4, 16)
    torch.testing.assert_close(space, tsf.sinusoidal_table(49, 16))
    torch.testing.assert_close(time_, tsf.sinusoidal_table(4, 16))
    by_hand = {
        (space, 1, 0): math.sin(1),
        (space, 48, 3): math.cos(48 / 10000**0.125),
        (time_, 3, 1): math.cos(3),
        (time_, 2, 2): math.sin(2 / 10000**0.125),
    }
    for (table, position, dim), value in by_hand.items():
        assert table[position, dim].item() == pytest.approx(value, abs=1e-6), (position, dim)
    assert 0.01 < gaussian.space_position.detach().std().item() < 0.03
    assert not torch.allclose(gaussian.space_position.detach(), space, atol=0.1)
    # the forward pass adds them: black frames embed to bias + S[p] + T[t]
    _, tokens = sinusoidal.embed(torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    expected = sinusoidal.patch_embed.bias.detach() + space[None] + time_[:, None]  # (T, P, D)
    torch.testing.assert_close(tokens[0].detach(), expected)
    # and learn: the value's gradient reaches both tables
    sinusoidal.get_value(observations(2)).sum().backward()
    assert sinusoidal.space_position.grad.abs().sum() > 0 and sinusoidal.time_position.grad.abs().sum() > 0


@pytest.mark.quick
def test_unknown_pos_encoding_refused(tsf):
    with pytest.raises(ValueError, match="sinusoidal"):
        tsf.Agent(BREAKOUT_ACTIONS, pos_encoding="learned")


@pytest.mark.quick
def test_variant_name_tells_the_encodings_apart_and_old_runs_keep_theirs(tsf):
    from attention_utils import results

    assert tsf.variant_name(tsf.Args()) == "d16_h1_l1_m2_p12"
    assert tsf.variant_name(tsf.Args(pos_encoding="sinusoidal")) == "d16_h1_l1_m2_p12_sin"
    # args saved before --pos-encoding and --preset existed: explicit sizes, no new fields
    old = {k: v for k, v in vars(tsf.Args()).items() if k not in ("pos_encoding", "preset")}
    assert tsf.Args(**old).pos_encoding == "gaussian" and tsf.variant_name(tsf.Args(**old)) == "d16_h1_l1_m2_p12"
    assert results.variant_name(old) == "timesformer_d16_h1_l1_m2_p12"
    assert results.variant_name({**old, "pos_encoding": "sinusoidal"}) == "timesformer_d16_h1_l1_m2_p12_sin"
    assert results.variant_name({**old, "pos_encoding": "gaussian"}) == "timesformer_d16_h1_l1_m2_p12"


SIZES = ("embed_dim", "heads", "depth", "mlp_ratio", "patch_size")


def sizes_of(args):
    return tuple(getattr(args, name) for name in SIZES)


@pytest.mark.quick
def test_preset_fills_only_the_sizes_left_unset(tsf):
    """The rule: a size given explicitly (command line, in any order, or a checkpoint's args) always wins, even when
    it equals another preset's value; the preset fills the rest."""
    import tyro

    assert sizes_of(tsf.Args()) == (16, 1, 1, 2, 12)
    assert sizes_of(tsf.Args(preset="gpu")) == (64, 4, 2, 4, 12)
    for argv in (
        ["--preset", "gpu", "--heads", "8", "--embed-dim", "16"],
        ["--embed-dim", "16", "--heads", "8", "--preset", "gpu"],
    ):
        args = tyro.cli(tsf.Args, args=argv)
        assert (args.preset, sizes_of(args)) == ("gpu", (16, 8, 2, 4, 12)), argv
    assert sizes_of(tyro.cli(tsf.Args, args=["--patch-size", "28"])) == (16, 1, 1, 2, 28)
    # a checkpoint's args name every size: a preset never changes them
    saved = vars(tsf.Args(preset="cpu", depth=3))
    assert sizes_of(tsf.Args(**{**saved, "preset": "gpu"})) == (16, 1, 3, 2, 12)


@pytest.mark.quick
def test_gpu_preset_parameter_count_by_hand(tsf):
    # D = 64, 4 heads, 2 blocks, MLP ratio 4, 12x12 patches (49 per frame), 4 actions:
    #   patch embedding 144*64 + 64 = 9,280; CLS 64; space positions 49*64 = 3,136; time positions 4*64 = 256
    #   per block: LayerNorms 3*128 = 384; time attention 64*192 + 192 + 64*64 + 64 = 16,640; space attention 16,640;
    #   MLP 64*256 + 256 + 256*64 + 64 = 33,088 -> 66,752, two blocks 133,504
    #   final LayerNorm 128; policy 64*4 + 4 = 260; value 65
    expected = 9_280 + 64 + 3_136 + 256 + 133_504 + 128 + 260 + 65
    assert expected == 146_693 == hand_count(64, 4, 2, 4, 12)
    for encoding in ("gaussian", "sinusoidal"):
        agent = tsf.make_agent(tsf.Args(preset="gpu", pos_encoding=encoding), BREAKOUT_ACTIONS)
        assert sum(p.numel() for p in agent.parameters()) == expected, encoding
    assert sum(p.numel() for p in tsf.make_agent(tsf.Args(), BREAKOUT_ACTIONS).parameters()) == 6_645


def test_sinusoidal_run_end_to_end(tsf, tmp_path):
    """--pos-encoding sinusoidal through the real entry point, with a preset and explicit sizes: the run's name,
    args and checkpoint carry both, the embeddings start from the table and are trained from there, and
    attention_utils loads the checkpoint under its name."""
    from attention_utils.checkpoints import load_agent

    proc = run_tsf([*TINY, *SINUSOIDAL_FLAGS, "--total-timesteps", BATCH], tmp_path)
    assert_ok(proc)
    (run_dir,) = run_dirs(tmp_path, SINUSOIDAL_VARIANT)
    saved = json.loads((run_dir / "args.json").read_text())
    assert {k: saved[k] for k in ("preset", "pos_encoding", *SIZES)} == {
        "preset": "gpu",
        "pos_encoding": "sinusoidal",
        **dict(zip(SIZES, (16, 2, 1, 4, 12))),
    }
    (path,) = checkpoint_files(run_dir)
    ckpt = load_checkpoint(path)
    assert ckpt["variant"] == SINUSOIDAL_VARIANT
    agent = tsf.make_agent(tsf.Args(**{k: v for k, v in ckpt["args"].items() if k in saved}), BREAKOUT_ACTIONS)
    agent.load_state_dict(ckpt["model"])  # strict
    for name, table in (("space_position", tsf.sinusoidal_table(49, 16)), ("time_position", tsf.sinusoidal_table(4, 16))):
        moved = (ckpt["model"][name] - table).abs().max().item()
        assert 0 < moved < 0.05, (name, moved)  # one update of Adam steps (lr 2.5e-4) away from the table
    loaded = load_agent(str(path))
    assert loaded.variant == SINUSOIDAL_VARIANT and loaded.args.pos_encoding == "sinusoidal"


def test_checkpoint_from_before_the_fields_loads_under_its_old_name(trained, tmp_path):
    from attention_utils import results
    from attention_utils.checkpoints import load_agent

    _, run_dir, _ = trained
    ckpt = load_checkpoint(checkpoint_files(run_dir)[-1])
    ckpt["args"] = {k: v for k, v in ckpt["args"].items() if k not in ("pos_encoding", "preset")}
    old = tmp_path / f"step_{TOTAL:09d}.cleanrl_model"
    torch.save(ckpt, old)
    loaded = load_agent(str(old))
    assert loaded.variant == SMALL_VARIANT and loaded.args.pos_encoding == "gaussian"
    assert results.variant_name(ckpt["args"]) == "timesformer_" + SMALL_VARIANT
