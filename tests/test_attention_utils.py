"""attention_utils entry points on checkpoints trained for a few hundred steps in this test session."""
import subprocess
import sys

import imageio.v3 as iio
import matplotlib.image
import numpy as np
import pytest
import torch

from attention_utils.perturbation import gaussian_blur, perturbation_saliency
from conftest import REPO, describe, script_env


def run(args, cwd, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkpoints(trained_checkpoints):
    return trained_checkpoints


@pytest.mark.parametrize("script, width", [("ppo_atari_selfattn.py", 320), ("ppo_atari_fls.py", 160)])
def test_enjoy_plays_and_records(checkpoints, tmp_path, script, width):
    proc = run(["-m", "attention_utils.enjoy", "--checkpoint", checkpoints[script], "--episodes", "2", "--out", tmp_path], REPO)
    assert proc.returncode == 0, describe(proc)
    returns = [float(line.split("return ")[1].split(",")[0]) for line in proc.stdout.splitlines() if line.startswith("episode ")]
    assert len(returns) == 2
    assert f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over 2 episodes" in proc.stdout
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 2
    frame = iio.imread(videos[0], index=0)
    assert frame.shape[1] == width and frame.shape[0] >= 210  # the script's own attention panels


def test_enjoy_refuses_a_non_checkpoint(tmp_path):
    bogus = tmp_path / "x.cleanrl_model"
    bogus.write_text("not a checkpoint")
    proc = run(["-m", "attention_utils.enjoy", "--checkpoint", bogus], REPO)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bogus} is not a checkpoint")


def test_perturbation_finds_the_pixels_that_matter():
    """A toy agent whose logits read one 6x6 patch and whose value reads another: the policy map peaks
    on the first patch, the value map on the second."""
    obs = torch.zeros(4, 84, 84, dtype=torch.uint8)
    obs[:, 20:26, 60:66] = 255  # the policy's patch
    obs[:, 60:66, 10:16] = 255  # the value's patch

    def policy_and_value(batch):
        x = batch.float()
        policy_patch = x[:, :, 20:26, 60:66].mean((1, 2, 3))
        return torch.stack([policy_patch, -policy_patch], -1), x[:, :, 60:66, 10:16].mean((1, 2, 3))

    policy_map, value_map = perturbation_saliency(policy_and_value, obs, stride=1, sigma=3.0)
    assert policy_map.shape == value_map.shape == (84, 84)
    assert (policy_map >= 0).all() and (value_map >= 0).all()
    peak_row, peak_col = divmod(int(policy_map.argmax()), 84)
    assert 18 <= peak_row <= 27 and 58 <= peak_col <= 67
    peak_row, peak_col = divmod(int(value_map.argmax()), 84)
    assert 58 <= peak_row <= 67 and 8 <= peak_col <= 17
    assert float(policy_map[60:66, 10:16].max()) < 1e-6  # the policy does not read the value's patch
    coarse_policy, _ = perturbation_saliency(policy_and_value, obs, stride=4, sigma=3.0)
    assert coarse_policy.shape == (84, 84)


def test_gaussian_blur_keeps_mass_and_smooths():
    image = torch.zeros(1, 41, 41)
    image[0, 20, 20] = 1.0
    blurred = gaussian_blur(image, 3.0)
    assert blurred.shape == image.shape
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-4) and float(blurred.max()) < 0.05


def test_perturbation_cli_writes_overlays(checkpoints, tmp_path):
    out = tmp_path / "perturbation.png"
    proc = run(["-m", "attention_utils.perturbation", "--checkpoint", checkpoints["ppo_atari_fls.py"], "--frames", "2",
                "--spacing", "10", "--stride", "3", "--out", out], REPO)
    assert proc.returncode == 0, describe(proc)
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 400  # 2 rows of frame | policy | value


@pytest.mark.parametrize("script", ["ppo_atari_fls.py", "ppo_atari_selfattn.py"])
def test_novel_object_injection(checkpoints, tmp_path, script):
    import csv

    out = tmp_path / "novel"
    proc = run(["-m", "attention_utils.novel_object", "--checkpoint", checkpoints[script], "--inject-step", "10", "--steps", "30",
                "--out", out], REPO)
    assert proc.returncode == 0, describe(proc)
    rows = list(csv.DictReader(open(f"{out}.csv")))
    assert len(rows) == 30 and [int(r["injected"]) for r in rows] == [0] * 10 + [1] * 20
    before, after = rows[:10], rows[10:]
    # before the injection both passes see the same observation: no change at all
    assert all(float(r["policy_kl"]) == 0 and r["attention_on_sprite"] == r["attention_on_sprite_without"] for r in before)
    # after it the sprite moves the policy and the attention inside its box
    assert all(float(r["policy_kl"]) > 0 for r in after)
    assert all(r["attention_on_sprite"] != r["attention_on_sprite_without"] for r in after)
    for r in rows:
        assert sum(map(float, r["action_probs"].split(";"))) == pytest.approx(1.0, abs=1e-3)
    assert matplotlib.image.imread(f"{out}.png").shape[0] > 300


def test_novel_object_sprite_must_fit(checkpoints):
    proc = run(["-m", "attention_utils.novel_object", "--checkpoint", checkpoints["ppo_atari_fls.py"], "--row", "80"], REPO)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "error: the sprite (8x8 at row 80, column 30) must lie inside the 84x84 observation"
