"""attention_utils entry points on checkpoints trained for a few hundred steps in this test session."""

import subprocess
import sys

import imageio.v3 as iio
import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import REPO, describe, script_env

from attention_utils.checkpoints import input_saliency, is_recurrent, load_agent, policy_and_value, sequence_saliency
from attention_utils.perturbation import gaussian_blur, perturbation_saliency

TOPDOWN = "ppo_atari_topdown.py"


def run(args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def checkpoints(trained_checkpoints):
    return trained_checkpoints


@pytest.fixture(scope="module")
def topdown(checkpoints):
    """The recurrent top-down agent, loaded in this process."""
    return load_agent(checkpoints[TOPDOWN])


def random_observations(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 4, 84, 84), dtype=torch.uint8, generator=generator)


# one panel per head after the frame: CWCA draws 1 map, FLS its saliency; the top-down agent has 4 heads
@pytest.mark.parametrize(
    "script, width, episodes", [("ppo_atari_selfattn.py", 320, 2), ("ppo_atari_fls.py", 160, 2), (TOPDOWN, 5 * 160, 1)]
)
def test_enjoy_plays_and_records(checkpoints, tmp_path, script, width, episodes):
    proc = run(
        ["-m", "attention_utils.enjoy", "--checkpoint", checkpoints[script], "--episodes", episodes, "--out", tmp_path], REPO
    )
    assert proc.returncode == 0, describe(proc)
    returns = [
        float(line.split("return ")[1].split(",")[0]) for line in proc.stdout.splitlines() if line.startswith("episode ")
    ]
    assert len(returns) == episodes
    assert f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over {episodes} episodes" in proc.stdout
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == episodes
    frame = iio.imread(videos[0], index=0)
    assert frame.shape[1] == width and frame.shape[0] >= 210  # the script's own attention panels


@pytest.mark.quick
def test_enjoy_refuses_a_non_checkpoint(tmp_path):
    bogus = tmp_path / "x.cleanrl_model"
    bogus.write_text("not a checkpoint")
    proc = run(["-m", "attention_utils.enjoy", "--checkpoint", bogus], REPO)
    # the wording is checkpoints.load_agent's: one line naming the file
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert str(bogus) in proc.stderr


@pytest.mark.quick
def test_perturbation_finds_the_pixels_that_matter():
    """A toy agent whose logits read one 6x6 patch and whose value reads another: the policy map peaks
    on the first patch, the value map on the second, on the probabilities (default) and on the logits."""
    obs = torch.zeros(4, 84, 84, dtype=torch.uint8)
    obs[:, 20:26, 60:66] = 255  # the policy's patch
    obs[:, 60:66, 10:16] = 255  # the value's patch

    def policy_and_value(batch):
        x = batch.float() / 255
        policy_patch = x[:, :, 20:26, 60:66].mean((1, 2, 3))
        return torch.stack([policy_patch, -policy_patch], -1), x[:, :, 60:66, 10:16].mean((1, 2, 3))

    for policy in ("probs", "logits"):
        policy_map, value_map = perturbation_saliency(policy_and_value, obs, stride=2, sigma=3.0, policy=policy)
        assert policy_map.shape == value_map.shape == (84, 84)
        assert (policy_map >= 0).all() and (value_map >= 0).all()
        peak_row, peak_col = divmod(int(policy_map.argmax()), 84)
        assert 18 <= peak_row <= 27 and 58 <= peak_col <= 67
        peak_row, peak_col = divmod(int(value_map.argmax()), 84)
        assert 58 <= peak_row <= 67 and 8 <= peak_col <= 17
        assert float(policy_map[60:66, 10:16].max()) < 1e-6  # the policy does not read the value's patch
    coarse_policy, _ = perturbation_saliency(policy_and_value, obs, stride=4, sigma=3.0)
    assert coarse_policy.shape == (84, 84)


@pytest.mark.quick
def test_perturbation_policy_saliency_is_on_the_probabilities():
    """Section 4.7's S_pi = 1/2 ||pi(X') - pi(X)||^2 with pi the softmax. Two actions with logits (z, 0):
    pi(X') - pi(X) = (sigma(z') - sigma(z)) (1, -1), so S_pi = (sigma(z') - sigma(z))^2, while the logits'
    form is 1/2 (z' - z)^2; at z = 0 with a tiny change sigma' = 1/4, so the ratio is 2 (1/4)^2 = 1/8.
    Logits that move together (z, z) leave the probabilities unchanged: S_pi = 0, not so on the logits."""
    obs = torch.zeros(4, 84, 84, dtype=torch.uint8)
    obs[:, 30:40, 30:40] = 255

    def logits_z_zero(batch):  # z = 0 for the clean observation, tiny changes when the patch is blurred
        z = 1e-3 * (batch.float()[:, :, 30:40, 30:40].mean((1, 2, 3)) / 255 - 1)
        return torch.stack([z, torch.zeros_like(z)], -1), torch.zeros(len(batch))

    probs_map, _ = perturbation_saliency(logits_z_zero, obs, stride=6, sigma=3.0)
    logits_map, _ = perturbation_saliency(logits_z_zero, obs, stride=6, sigma=3.0, policy="logits")
    moved = logits_map > 1e-3 * logits_map.max()
    assert moved.sum() > 10
    assert torch.allclose(probs_map[moved] / logits_map[moved], torch.full_like(probs_map[moved], 1 / 8), rtol=1e-3)

    def shifted_together(batch):
        z = batch.float()[:, :, 30:40, 30:40].mean((1, 2, 3)) / 255
        return torch.stack([z, z], -1), torch.zeros(len(batch))

    assert float(perturbation_saliency(shifted_together, obs, stride=6)[0].max()) < 1e-12
    assert float(perturbation_saliency(shifted_together, obs, stride=6, policy="logits")[0].max()) > 1e-3


@pytest.mark.quick
def test_gaussian_blur_keeps_mass_and_smooths():
    image = torch.zeros(1, 41, 41)
    image[0, 20, 20] = 1.0
    blurred = gaussian_blur(image, 3.0)
    assert blurred.shape == image.shape
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-4) and float(blurred.max()) < 0.05


@pytest.mark.parametrize("script, policy", [("ppo_atari_fls.py", "logits"), (TOPDOWN, "probs")])
def test_perturbation_cli_writes_overlays(checkpoints, tmp_path, script, policy):
    out = tmp_path / "perturbation.png"
    command = ["-m", "attention_utils.perturbation", "--checkpoint", checkpoints[script], "--frames", "2", "--spacing", "10"]
    command += ["--stride", "3", "--out", out, "--policy", policy]
    proc = run(command, REPO)
    assert proc.returncode == 0, describe(proc)
    assert f"explained states at steps 201, 211; S_pi on the {policy}" in proc.stdout  # after 201 unperturbed steps
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 400  # 2 rows of frame | policy | value

    # the policy saliency is drawn (blue on the black background) even where an untrained agent's map peaks near 1e-14
    def pure_blue(panel):
        return int(((panel[..., 2] > 0.3) & (panel[..., 0] < 0.1) & (panel[..., 1] < 0.1)).sum())

    third = image.shape[1] // 3
    assert pure_blue(image[:, third : 2 * third]) > 100 > pure_blue(image[:, :third])


def test_perturbation_policy_flag_reaches_the_saliency(checkpoints, tmp_path, monkeypatch):
    """In process: main hands --policy to perturbation_saliency for every explained state."""
    from attention_utils import perturbation

    seen = []

    def recording(policy_and_value, obs, stride, sigma, policy):
        seen.append(policy)
        return torch.rand(84, 84), torch.rand(84, 84)

    monkeypatch.setattr(perturbation, "perturbation_saliency", recording)
    for policy in ("logits", "probs"):
        args = perturbation.Args(
            checkpoint=str(checkpoints["ppo_atari_fls.py"]),
            frames=2,
            warmup=3,
            spacing=2,
            policy=policy,
            out=str(tmp_path / "p.png"),
        )
        perturbation.main(args)
    assert seen == ["logits", "logits", "probs", "probs"]


@pytest.mark.parametrize(
    "script, sprite",
    [("ppo_atari_fls.py", "fish"), ("ppo_atari_selfattn.py", "fish"), (TOPDOWN, "fish"), ("ppo_atari_fls.py", "checkerboard")],
)
def test_novel_object_injection(checkpoints, tmp_path, script, sprite):
    import csv

    out = tmp_path / "novel"
    command = ["-m", "attention_utils.novel_object", "--checkpoint", checkpoints[script], "--sprite", sprite]
    proc = run(command + ["--inject-step", "10", "--steps", "30", "--out", out], REPO)
    assert proc.returncode == 0, describe(proc)
    rows = list(csv.DictReader(open(f"{out}.csv")))
    assert len(rows) == 30 and [int(r["injected"]) for r in rows] == [0] * 10 + [1] * 20
    before, after = rows[:10], rows[10:]
    # before the injection both passes see the same observation: no change at all
    assert all(float(r["policy_kl"]) == 0 and r["attention_on_sprite"] == r["attention_on_sprite_without"] for r in before)
    assert all(r["sprite_col"] == "" and int(r["visible_pixels"]) == 0 for r in before)
    # after it the object moves the policy and the attention inside its box
    # (an untrained agent's KL is ~1e-16: the fish's first few pixels may move it less than fp64 resolves)
    # (a recurrent agent trained 256 steps can sit at exactly 0 on some frames: most must move)
    moved = [float(r["policy_kl"]) > 0 for r in after[3:]]
    assert sum(moved) >= len(moved) // 2, moved
    assert all(r["attention_on_sprite"] != r["attention_on_sprite_without"] for r in after)
    if sprite == "fish":  # from just off the left edge (column 1 - 8), one column per step, its nose first
        assert [int(r["sprite_col"]) for r in after] == [-7 + i for i in range(20)]
        assert [int(r["visible_pixels"]) for r in after[:3]] == [3, 8, 13]  # columns 7, 6 + 7, 5 + 6 + 7 of the fish
        assert [float(r["uniform_share"]) for r in after[:2]] == [5 / 84**2, 10 / 84**2]
    else:
        assert all((int(r["sprite_row"]), int(r["sprite_col"]), int(r["visible_pixels"]) > 0) == (30, 30, True) for r in after)
    for r in rows:
        assert sum(map(float, r["action_probs"].split(";"))) == pytest.approx(1.0, abs=1e-3)
    assert matplotlib.image.imread(f"{out}.png").shape[0] > 300
    if script == TOPDOWN:  # the counterfactual copy carries its own state: the same until the object is seen, then not
        changes = [float(r["state_change"]) for r in rows]  # the state each step's observation is seen with
        assert all(change == 0 for change in changes[:11])
        assert sum(change > 0 for change in changes[11:]) >= len(changes[11:]) // 2  # a lost life resets both to zeros
    else:
        assert all(r["state_change"] == "" for r in rows)


@pytest.mark.quick
def test_fish_path_through_the_stacked_frames():
    """Frame k of step t's observation was rendered at step t - 3 + k: with the fish injected at step 10 from
    column -7 at 2 columns per step, step 12's frames show it at steps 9 (not yet), 10, 11, 12. Bobbing by 4
    rows every 8 steps puts it 4 rows lower a quarter period (2 steps) in."""
    from attention_utils.novel_object import Args, position_at, stacked_positions

    args = Args(checkpoint="x", inject_step=10, col=-7, speed=2.0)
    assert stacked_positions(args, 12) == [None, (30, -7), (30, -5), (30, -3)]
    assert stacked_positions(args, 9) == [None] * 4
    assert position_at(Args(checkpoint="x", amplitude=4, period=8), 2) == (34, -5)  # default column: 1 - 8, + 2
    checkerboard = Args(checkpoint="x", sprite="checkerboard", inject_step=5)
    assert stacked_positions(checkerboard, 5) == [(30, 30)] * 4 and stacked_positions(checkerboard, 4) == [None] * 4


@pytest.mark.quick
def test_fish_is_clipped_at_the_screen_edges():
    from attention_utils.novel_object import FISH_GREY, FISH_ROWS, fish_sprite, paste

    obs = torch.zeros(4, 84, 84, dtype=torch.uint8)
    seen = paste(obs, fish_sprite(), [None, None, (10, -5), (82, 80)])
    assert seen[:2].max() == 0
    drawn = torch.tensor([[FISH_GREY.get(c, 0) for c in row] for row in FISH_ROWS], dtype=torch.uint8)  # (5, 8)
    assert torch.equal(seen[2, 10:15, :3], drawn[:, 5:]) and int((seen[2] > 0).sum()) == int((drawn[:, 5:] > 0).sum())
    assert torch.equal(seen[3, 82:, 80:], drawn[:2, :4])  # the bottom-right corner: 2 rows, 4 columns
    big = fish_sprite(3)[0]
    assert big.shape == (15, 24) and torch.equal(big[::3, ::3], drawn)


def test_novel_object_sprite_must_fit(checkpoints):
    command = [
        "-m",
        "attention_utils.novel_object",
        "--checkpoint",
        checkpoints["ppo_atari_fls.py"],
        "--sprite",
        "checkerboard",
    ]
    proc = run(command + ["--row", "80"], REPO)
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "error: the sprite (8x8 at row 80, column 30) must lie inside the 84x84 observation"
    )


def refusals(tmp_path):
    """(tool module, its Args' settings, the error line) for bad arguments of the three checkpoint tools; the
    checkpoint is a dummy file, never loaded, as every refusal comes first."""
    dummy = tmp_path / "dummy.cleanrl_model"
    dummy.write_text("never loaded")
    folder, a_file, missing = tmp_path, dummy, tmp_path / "missing.cleanrl_model"
    missing_line = f"error: --checkpoint {missing}: no such file or folder; give a .cleanrl_model checkpoint or a run folder"
    return [
        ("enjoy", dict(episodes=0), "error: --episodes 0: must be at least 1"),
        ("enjoy", dict(episodes=-3), "error: --episodes -3: must be at least 1"),
        ("enjoy", dict(threads=-1), "error: --threads -1: must be at least 0"),
        ("enjoy", dict(checkpoint=str(missing)), missing_line),
        ("enjoy", dict(out=str(a_file)), f"error: --out {a_file} is a file; give a folder (new or existing)"),
        ("perturbation", dict(frames=0), "error: --frames 0: must be at least 1"),
        ("perturbation", dict(spacing=0), "error: --spacing 0: must be at least 1"),
        ("perturbation", dict(stride=-1), "error: --stride -1: must be at least 1"),
        ("perturbation", dict(warmup=-1), "error: --warmup -1: must be at least 0"),
        ("perturbation", dict(sigma=0.0), "error: --sigma 0.0: must be positive"),
        ("perturbation", dict(checkpoint=str(missing)), missing_line),
        (
            "perturbation",
            dict(out=str(folder)),
            f"error: --out {folder} is a folder; give a file name (e.g. {folder / 'out.png'})",
        ),
        ("novel_object", dict(steps=0), "error: --steps 0: must be at least 1"),
        (
            "novel_object",
            dict(steps=30, inject_step=30),
            "error: --inject-step 30 must be inside the recorded stretch (0 .. --steps 30 - 1)",
        ),
        ("novel_object", dict(fish_scale=0), "error: --fish-scale 0: must be at least 1"),
        ("novel_object", dict(period=0.0), "error: --period 0.0: must be positive"),
        (
            "novel_object",
            dict(col=-20, speed=-1.0),
            "error: the fish (from row 30, column -20, -1 columns per step) never enters the 84x84 observation in steps "
            "0 .. 149; change --row, --col or --speed",
        ),
        ("novel_object", dict(checkpoint=str(missing)), missing_line),
        (
            "novel_object",
            dict(out=str(folder)),
            f"error: --out {folder} is a folder; give a file name (e.g. {folder / 'out.png'})",
        ),
    ]


@pytest.mark.quick
def test_tools_refuse_bad_arguments_before_any_work(tmp_path):
    import importlib

    for tool, changes, line in refusals(tmp_path):
        module = importlib.import_module(f"attention_utils.{tool}")
        args = module.Args(**{"checkpoint": str(tmp_path / "dummy.cleanrl_model"), **changes})
        with pytest.raises(SystemExit) as error:
            module.main(args)
        assert str(error.value) == line, (tool, changes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dummy.cleanrl_model"]  # nothing written


@pytest.mark.quick
@pytest.mark.parametrize("tool, flag", [("enjoy", "--episodes"), ("perturbation", "--frames"), ("novel_object", "--steps")])
def test_non_positive_counts_end_in_one_line(tmp_path, tool, flag):
    """Through the real entry point: exit status 1, one line on stderr, no traceback."""
    dummy = tmp_path / "dummy.cleanrl_model"
    dummy.write_text("never loaded")
    proc = run(["-m", f"attention_utils.{tool}", "--checkpoint", dummy, flag, "0"], tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [f"error: {flag} 0: must be at least 1"]


@pytest.mark.quick
def test_free_path_keeps_what_was_written(tmp_path):
    from attention_utils.cli_checks import free_path

    (tmp_path / "a.png").write_text("")
    assert free_path(str(tmp_path / "a.png")) == str(tmp_path / "a-2.png")
    assert free_path(str(tmp_path / "b.png")) == str(tmp_path / "b.png")
    (tmp_path / "c.csv").write_text("")  # a pair of outputs: either one taken moves both
    assert free_path(str(tmp_path / "c"), (".csv", ".png")) == str(tmp_path / "c-2")
    (tmp_path / "c-2.png").write_text("")
    assert free_path(str(tmp_path / "c"), (".csv", ".png")) == str(tmp_path / "c-3")


# ---------------------------------------------------------------------------------------------------
# recurrent agents: saliency at a state and along a game


def test_recurrence_is_detected(checkpoints, topdown):
    assert is_recurrent(topdown.agent)
    assert not is_recurrent(load_agent(checkpoints["ppo_atari_fls.py"]).agent)


def test_recurrent_policy_and_value_is_one_step_of_the_agent(topdown):
    """The function closed over a Memory gives the agent's own value and log-probabilities at that state,
    and a batch of observations gets, row by row, what each would get alone (the state is expanded, not mixed)."""
    agent = topdown.agent
    memory = topdown.script.Memory(agent, 1, "cpu")
    observations = random_observations(6)
    for t in range(3):  # a few steps, a reward and a life lost, so the state and inputs are not the initial ones
        memory.act(agent, observations[t : t + 1])
        memory.observe(np.array([1.0 if t == 0 else 0.0]), np.array([t == 1]))
    function = policy_and_value(agent, memory)
    obs = observations[3:4]
    with torch.no_grad():
        action, logprob, _, value, _ = agent.get_action_and_value(
            obs, memory.state, memory.prev_action, memory.prev_reward, memory.done
        )
    logits, values = function(obs)
    assert logits.shape == (1, agent.num_actions) and values.shape == (1,)
    assert float(values[0]) == pytest.approx(float(value[0, 0]), abs=1e-5)
    assert float(torch.log_softmax(logits, -1)[0, action[0]]) == pytest.approx(float(logprob[0]), abs=1e-5)
    batch_logits, batch_values = function(observations[3:6])
    single = [function(observations[i : i + 1]) for i in range(3, 6)]
    assert torch.allclose(batch_logits, torch.cat([s[0] for s in single]), atol=1e-5)
    assert torch.allclose(batch_values, torch.cat([s[1] for s in single]), atol=1e-5)
    memory.act(agent, obs)  # the function keeps the state it was made at
    assert torch.equal(function(obs)[0], logits)
    with pytest.raises(ValueError, match="recurrent agent acts from a state"):
        policy_and_value(agent)


def test_recurrent_perturbation_saliency_depends_on_the_state(topdown):
    agent = topdown.agent
    obs = random_observations(1, seed=1)[0]
    fresh = topdown.script.Memory(agent, 1, "cpu")
    later = topdown.script.Memory(agent, 1, "cpu")
    for t, past in enumerate(random_observations(4, seed=2)):
        later.act(agent, past[None])
        later.observe(np.array([float(t % 2)]), np.array([False]))
    maps = [perturbation_saliency(policy_and_value(agent, memory), obs, stride=6) for memory in (fresh, later)]
    for policy_map, value_map in maps:
        assert policy_map.shape == value_map.shape == (84, 84)
        assert (policy_map >= 0).all() and (value_map >= 0).all() and policy_map.max() > 0 and value_map.max() > 0
    # an untrained agent's maps are tiny (~1e-14): compare where they look, each scaled to its maximum
    for fresh_map, later_map in zip(*maps):
        assert not torch.allclose(fresh_map / fresh_map.max(), later_map / later_map.max(), atol=1e-2)


def test_input_saliency_needs_the_state_of_a_recurrent_agent(checkpoints, topdown):
    saliency = input_saliency(topdown)
    obs = random_observations(2)
    with pytest.raises(ValueError, match="is recurrent"):
        saliency(obs)
    maps = saliency(obs, topdown.agent.initial_state(2, "cpu"))
    assert maps.shape == (2, 84, 84) and float(maps.min()) == 0 and float(maps.amax((1, 2)).min()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="is feed-forward"):
        input_saliency(load_agent(checkpoints["ppo_atari_selfattn.py"]))(obs, topdown.agent.initial_state(2, "cpu"))


def test_sequence_saliency_carries_the_state(topdown):
    """Along a sequence each map is seen with the state the earlier observations left: it differs from the
    map at the initial state, does not depend on later observations or on how the sequence is batched, a
    reward reaches the attention two steps later (through the core's state and the next queries), and an
    episode end starts the rest afresh."""
    along_game = sequence_saliency(topdown)
    observations = random_observations(8, seed=3)
    maps = along_game(observations)
    assert maps.shape == (8, 84, 84) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    alone = input_saliency(topdown)(observations, topdown.agent.initial_state(8, "cpu"))
    assert torch.allclose(maps[0], alone[0], atol=1e-5)
    assert all(not torch.allclose(maps[t], alone[t], atol=1e-3) for t in range(1, 8))
    assert torch.allclose(sequence_saliency(topdown, batch_size=3)(observations), maps, atol=1e-4)
    assert torch.allclose(along_game(observations[:6]), maps[:6], atol=1e-4)
    rewards = np.zeros(8)
    rewards[0] = 1.0  # earned on the step from observation 0 to 1
    rewarded = along_game(observations, rewards)
    assert torch.allclose(rewarded[:2], maps[:2], atol=1e-5) and not torch.allclose(rewarded[2], maps[2], atol=1e-3)
    episode_ends = np.zeros(8, dtype=bool)
    episode_ends[4] = True
    restarted = along_game(observations, None, episode_ends)
    assert torch.allclose(restarted[:5], maps[:5], atol=1e-5)
    assert torch.allclose(restarted[5:], along_game(observations[5:]), atol=1e-4)
    assert not torch.allclose(restarted[5], maps[5], atol=1e-3)
    with pytest.raises(ValueError, match="one entry per observation"):
        along_game(observations, np.zeros(3))
