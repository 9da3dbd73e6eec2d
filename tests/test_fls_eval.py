"""ppo_atari_fls.py: BreakoutInfinite (Free-Lunch Saliency via Attention in Atari Agents, section 6.2), the long
evaluation mode and the saliency video."""

import csv

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import REPO, describe, load_module, run_script

from attention_utils.ale import AlePool, RenderedAtari

SCRIPT = REPO / "ppo_atari_fls.py"
TINY = (
    "--num-envs 2 --num-steps 16 --num-minibatches 2 --update-epochs 1 "
    "--eval-episodes 1 --eval-freq 32 --save-freq 32 --torch-threads 1 --env-threads 1 --total-timesteps 32"
).split()


@pytest.fixture(scope="module")
def fls():
    return load_module(SCRIPT, "ppo_atari_fls")


def run_fls(args, cwd, timeout=600):
    return run_script(args, cwd, timeout, SCRIPT)


def ram_score(ale):
    ram = ale.getRAM()
    return 100 * int(ram[76] & 0x0F) + 10 * int(ram[77] >> 4) + int(ram[77] & 0x0F)


def write_ram_score(ale, score):
    ram = ale.getRAM()
    ale.setRAM(76, (int(ram[76]) & 0xF0) | score // 100)
    ale.setRAM(77, ((score // 10 % 10) << 4) | score % 10)


def tracking_action(ale):
    """A scripted Breakout player: serve, then keep the paddle (RAM 72) under the ball (RAM 99)."""
    ram = ale.getRAM()
    paddle, ball_x, ball_y = int(ram[72]), int(ram[99]), int(ram[101])
    if ball_y == 0:
        return 1  # FIRE
    if ball_x > paddle + 8:
        return 2  # RIGHT
    if ball_x < paddle + 4:
        return 3  # LEFT
    return 0


def play_from_score(game, start_score, max_steps=6000):
    """Reset `game`, write `start_score` into the emulator's score, play the tracking policy for one game;
    returns the per-step rewards and the score left in RAM. The written score itself comes back as
    reward on the next frame (the emulator scores the jump), like any other score change."""
    env = RenderedAtari(game, seed=0)
    env.reset()
    write_ram_score(env.ale, start_score)
    rewards, done = [], False
    while not done and len(rewards) < max_steps:
        _, reward, done = env.step(tracking_action(env.ale))
        rewards.append(reward)
    return np.array(rewards), ram_score(env.ale)


@pytest.mark.quick
def test_breakout_infinite_score_passes_864_without_negative_rewards():
    rewards, score_in_ram = play_from_score("BreakoutInfinite", 850)
    total = rewards.sum()
    assert total > 864, f"the scripted player should have scored past 864 (total {total})"
    assert (rewards >= 0).all(), f"negative rewards: {rewards[rewards < 0]}"
    # the score in RAM was written down by 432 each time it reached 864: the true total is preserved
    assert score_in_ram < 864
    assert (total - score_in_ram) % 432 == 0 and total - score_in_ram >= 432


@pytest.mark.quick
def test_plain_breakout_keeps_its_score():
    """Control: without the rule, the emulator's score runs past 864 and is never written back."""
    rewards, score_in_ram = play_from_score("Breakout", 850)
    assert (rewards >= 0).all()
    assert score_in_ram == rewards.sum() > 864


@pytest.mark.quick
def test_ale_pool_follows_envpool_protocol():
    """Training protocol of the ale-py pool: a life loss ends the episode (not the game), rewards are
    clipped (info keeps them unclipped), and the step after an end is a reset step with no reward."""
    pool = AlePool("BreakoutInfinite", 2, seed=3, training=True)
    obs, _ = pool.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    life_losses, previous_end = 0, np.zeros(2, dtype=bool)
    for _ in range(3000):
        obs, reward, terminated, truncated, info = pool.step(rng.integers(0, 4, size=2))
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        assert np.all(np.sign(info["reward"][~previous_end]) == reward[~previous_end])
        assert np.all(reward[previous_end] == 0) and not np.any(terminated[previous_end])  # reset steps
        life_loss = terminated & ~info["terminated"]
        life_losses += life_loss.sum()
        previous_end = terminated | truncated
        if life_losses >= 2 and info["terminated"].any():
            break
    assert life_losses >= 2
    pool.close()


@pytest.mark.quick
def test_evaluate_gives_each_env_a_fixed_share(fls):
    """Episodes are counted per env against a share fixed in advance, so envs with short episodes do not
    crowd out the others; returns and lengths are the episodes' own."""

    class FakePool:  # env i ends an episode every i + 1 steps, with reward 1 per step
        def reset(self):
            self.t = np.zeros(3, dtype=int)
            return np.zeros((3, 4, 84, 84), dtype=np.uint8), {}

        def step(self, actions):
            self.t += 1
            done = self.t % (np.arange(3) + 1) == 0
            info = {"reward": np.ones(3), "elapsed_step": (self.t - 1) % (np.arange(3) + 1) + 1}
            return np.zeros((3, 4, 84, 84), dtype=np.uint8), np.ones(3), done, np.zeros(3, dtype=bool), info

    agent = fls.Agent(4, "nature")
    from contextlib import nullcontext

    returns, lengths, env_ids = fls.evaluate(agent, FakePool(), 7, "cpu", nullcontext)
    assert sorted(np.bincount(env_ids).tolist()) == [2, 2, 3] and np.bincount(env_ids)[0] == 3
    assert np.array_equal(returns, lengths) and np.array_equal(lengths, env_ids + 1)


@pytest.fixture(scope="module")
def infinite_run(tmp_path_factory):
    """A tiny BreakoutInfinite run with the saliency video; returns (cwd, run folder)."""
    cwd = tmp_path_factory.mktemp("infinite")
    proc = run_fls(["--env-id", "BreakoutInfinite", *TINY, "--capture-video"], cwd)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = list(cwd.glob("runs/BreakoutInfinite__ppo_atari_fls__sparse_fls__1__*"))
    return cwd, run_dir


def test_breakout_infinite_trains_and_evaluates(infinite_run):
    _, run_dir = infinite_run
    assert (run_dir / "step_000000032.cleanrl_model").is_file()
    rows = list(csv.reader(open(run_dir / "evals.csv")))
    assert [r[0] for r in rows[1:]] == ["32"] and float(rows[1][1]) >= 0


def test_capture_video_draws_the_saliency(infinite_run):
    """The video frames are Figure 4's two panels: the RGB frame (210 rows) over the 84x84 input scaled to
    160x160, the saliency drawn in green on the lower one."""
    _, run_dir = infinite_run
    (video,) = list((run_dir / "videos").glob("*.mp4"))
    frames = iio.imread(video)
    assert frames.shape[1:] == (370, 160, 3) and len(frames) > 10
    lower = frames[:, 210:].astype(int)
    assert (lower[..., 1] - lower[..., 0]).mean() > 20  # green dominates where the saliency is drawn


def test_eval_only_writes_per_episode_results(infinite_run):
    cwd, run_dir = infinite_run
    checkpoint = run_dir / "step_000000032.cleanrl_model"
    proc = run_fls(["--eval-only", "--resume", checkpoint, "--eval-episodes", "3"], cwd)
    assert proc.returncode == 0, describe(proc)
    results = run_dir / "eval_only_BreakoutInfinite_step_000000032_3ep.csv"
    rows = list(csv.DictReader(open(results)))
    assert len(rows) == 3 and sorted(int(r["env"]) for r in rows) == [0, 1, 2]
    assert all(float(r["return"]) >= 0 and int(r["length"]) > 0 for r in rows)
    mean = np.mean([float(r["return"]) for r in rows])
    assert f"mean return {mean:.2f}" in proc.stdout
    # no new checkpoint, no training: the folder's checkpoints are unchanged
    assert sorted(p.name for p in run_dir.glob("step_*")) == ["step_000000032.cleanrl_model"]
    # a second evaluation does not overwrite the first
    again = run_fls(["--eval-only", "--resume", checkpoint, "--eval-episodes", "3"], cwd)
    assert again.returncode == 0, describe(again)
    assert (run_dir / "eval_only_BreakoutInfinite_step_000000032_3ep-2.csv").is_file()
    assert list(csv.DictReader(open(results))) == rows


def test_eval_only_on_another_game(infinite_run):
    """A Breakout-family agent evaluated on envpool's Breakout; a game with other actions is refused."""
    cwd, run_dir = infinite_run
    checkpoint = run_dir / "step_000000032.cleanrl_model"
    proc = run_fls(["--eval-only", "--resume", checkpoint, "--eval-episodes", "2", "--eval-env-id", "Breakout"], cwd)
    assert proc.returncode == 0, describe(proc)
    assert (run_dir / "eval_only_Breakout_step_000000032_2ep.csv").is_file()
    bad = run_fls(["--eval-only", "--resume", checkpoint, "--eval-episodes", "2", "--eval-env-id", "Pong"], cwd)
    assert bad.returncode != 0
    assert "does not fit Pong (6 actions)" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.quick
def test_eval_only_needs_a_checkpoint(tmp_path):
    proc = run_fls(["--eval-only"], tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "error: --eval-only evaluates a checkpoint: name it with --resume PATH"
    assert not (tmp_path / "runs").exists()
