"""attention_utils.atari_head on a synthetic trial written in Atari-HEAD's on-disk format."""

import csv
import io
import subprocess
import sys
import tarfile

import imageio.v3 as iio
import numpy as np
import torch
from conftest import REPO, describe, script_env

from attention_utils.atari_head import (
    fixation_map,
    list_trials,
    preprocess,
    read_labels,
    read_trial,
    step_rewards_and_episode_ends,
    trial_metrics,
)

NUM_FRAMES = 40  # -> 10 pooled images -> 7 observations
OBJECT = (slice(60, 72), slice(100, 112))  # the planted bright object: rows 60-71, columns 100-111
PLANTED_FRAMES = (26, 27)  # the two frames kept for pooled image 6 (frames 4k+2 and 4k+3, k = 6)


def write_trial(folder, name="100_RZ_1234567_Jan-01-00-00-00", episode_of=lambda i: 0, reward_of=lambda i: 0):
    """Frames: a dim square wandering along the bottom in every frame; in frames 26 and 27 only, a bright
    object, looked at twice per frame. Other frames are looked at on the wandering square or not at all.
    `episode_of(i)` and `reward_of(i)` fill frame i's episode id and unclipped reward."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["frame_id,episode_id,score,duration(ms),unclipped_reward,action,gaze_positions"]
    with tarfile.open(folder / f"{name}.tar.bz2", "w:bz2") as tar:
        for i in range(NUM_FRAMES):
            frame = np.zeros((210, 160, 3), dtype=np.uint8)
            frame[170:176, 3 * i + 10 : 3 * i + 16] = 90  # the wandering square
            frame_id = f"RZ_1234567_{i + 1}"
            if i in PLANTED_FRAMES:
                frame[OBJECT] = 255
                gaze = "105.5,65.2,106.1,66.0"  # x (column), y (row) on the object
            elif i % 3 == 0:
                gaze = f"{3 * i + 12}.0,172.0"  # on the wandering square
            else:
                gaze = "null"
            lines.append(f"{frame_id},{episode_of(i)},0,50,{reward_of(i)},0,{gaze}")
            data = io.BytesIO()
            iio.imwrite(data, frame, extension=".png")
            info = tarfile.TarInfo(f"{name}/{frame_id}.png")
            info.size = len(data.getvalue())
            tar.addfile(info, io.BytesIO(data.getvalue()))
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.tar.bz2"


def stack_max(obs, rewards=None, episode_ends=None):
    """A saliency that is the objects themselves: the brightest value over the 4 stacked images."""
    return obs.float().amax(1)


def test_reader_and_alignment(tmp_path):
    archive = write_trial(tmp_path / "breakout")
    assert list_trials(tmp_path) == [archive]
    trial = read_trial(archive)
    assert trial.frames.shape == (NUM_FRAMES, 210, 160, 3)
    assert trial.gazes[26].shape == (2, 2) and trial.gazes[1].shape == (0, 2)
    observations, frame_indices = preprocess(trial.frames)
    assert observations.shape == (7, 4, 84, 84) and observations.dtype == torch.uint8
    assert frame_indices[0].tolist() == [2, 3, 6, 7, 10, 11, 14, 15]
    assert frame_indices[3].tolist() == [14, 15, 18, 19, 22, 23, 26, 27]
    # the object is in pooled image 6 only: the newest image of observation 3, the oldest of observation 6
    object_small = (slice(24, 28), slice(53, 58))  # cells fully inside rows 60-71, columns 100-111 (scales 84/210, 84/160)
    assert observations[3, 3][object_small].min() > 200 and observations[6, 0][object_small].min() > 200
    assert observations[2][:, object_small[0], object_small[1]].max() == 0  # before frame 26
    fixations = fixation_map([trial.gazes[i] for i in frame_indices[3]])
    assert fixations.sum() == 4 + 2  # 2 x 2 on the object, frames 15 and 18 on the square
    assert fixations[65, 105] == 2 and fixations[66, 106] == 2  # the same two positions in frames 26 and 27


def test_planted_fixation_on_planted_object_scores_high(tmp_path):
    trial = read_trial(write_trial(tmp_path / "breakout"))
    scores = trial_metrics(stack_max, trial, negatives_per_frame=6)
    assert scores["nss"] > 2
    assert 0.5 < scores["sauc"] <= 1.0
    assert scores["kl"] is not None and scores["kl"] >= 0
    # control: a map of the opposite corner is anti-correlated with where the human looked
    elsewhere = trial_metrics(lambda obs, *_: torch.flip(stack_max(obs), dims=(1, 2)), trial, negatives_per_frame=6)
    assert elsewhere["nss"] < 0 and elsewhere["kl"] > scores["kl"]


def test_rewards_and_episode_ends_between_observations(tmp_path):
    """Rewards in frames 21 (pooled image 5) and 33, 34 (image 8); episode 1 starts at frame 24 (image 6). The
    step from observation m to m + 1 adds image m + 4, so observation 1 is followed by the first reward,
    observation 2 ends episode 0 and observation 4 is followed by the other two."""
    archive = write_trial(tmp_path, episode_of=lambda i: int(i >= 24), reward_of=lambda i: {21: 4, 33: 1, 34: 2}.get(i, 0))
    trial = read_trial(archive)
    assert trial.rewards[21] == 4 and trial.episodes[23] == 0 and trial.episodes[24] == 1
    rewards, episode_ends = step_rewards_and_episode_ends(trial, 7)
    assert rewards.tolist() == [0, 4, 0, 0, 3, 0, 0]
    assert episode_ends.tolist() == [False, False, True, False, False, False, False]
    seen = {}

    def recording(observations, rewards, episode_ends):
        seen.update(count=len(observations), rewards=list(rewards), episode_ends=list(episode_ends))
        return stack_max(observations)

    trial_metrics(recording, trial, negatives_per_frame=2)
    assert seen == {"count": 7, "rewards": [0, 4, 0, 0, 3, 0, 0], "episode_ends": [False, False, True] + [False] * 4}


def test_labels_with_missing_fields(tmp_path):
    path = tmp_path / "trial.txt"
    path.write_text(
        "frame_id,episode_id,score,duration(ms),unclipped_reward,action,gaze_positions\n"
        "RZ_1,null,null,null,null,0,null\nRZ_2,3,10,50,1,2,10.5,20.0\n"
    )
    (first_id, first_episode, first_reward, first_gaze), (_, episode, reward, gaze) = read_labels(path)
    assert (first_id, first_episode, first_reward, first_gaze.shape) == ("RZ_1", -1, 0.0, (0, 2))
    assert (episode, reward, gaze.tolist()) == (3, 1.0, [[10.5, 20.0]])


def test_pipeline_table_from_checkpoints(tmp_path, trained_checkpoints):
    write_trial(tmp_path / "breakout" / "trials")
    write_trial(tmp_path / "breakout" / "trials", name="101_RZ_1234568_Jan-01-00-10-00")
    out = tmp_path / "tables"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_utils.atari_head",
            "--dataset",
            tmp_path / "breakout",
            "--game",
            "Breakout",
            "--checkpoints",
            trained_checkpoints["ppo_atari_fls.py"],
            trained_checkpoints["ppo_atari_selfattn.py"],
            trained_checkpoints["ppo_atari_topdown.py"],
            "--out",
            out,
            "--negatives-per-frame",
            "4",
        ],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, describe(proc)
    rows = list(csv.DictReader(open(out / "Breakout_saliency_metrics.csv")))
    assert [r["model"] for r in rows] == ["sparse_fls", "CWCA", "topdown"]
    for row in rows:
        assert row["trials"] == "2"
        assert -10 < float(row["nss"]) < 10 and float(row["kl"]) >= 0 and 0 <= float(row["sauc"]) <= 1
    table = (out / "Breakout_saliency_metrics.md").read_text()
    assert "| sparse_fls |" in table and "NSS" in table and "sAUC" in table


def test_missing_dataset_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_utils.atari_head",
            "--dataset",
            tmp_path,
            "--checkpoints",
            "x",
            "--out",
            tmp_path / "o",
        ],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: no Atari-HEAD trial (a .tar.bz2 with its .txt beside it) under {tmp_path}"
    )
