"""attention_utils.atari_head on a synthetic trial written in Atari-HEAD's on-disk format."""

import csv
import io
import math
import subprocess
import sys
import tarfile

import imageio.v3 as iio
import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import REPO, describe, script_env

from attention_utils.atari_head import (
    LABELS_FORMAT,
    Args,
    Trial,
    dataset_fixations,
    fixation_map,
    fixations_on_saliency,
    list_trials,
    main,
    observation_scores,
    preprocess,
    read_labels,
    read_trial,
    step_rewards_and_episode_ends,
    summarise,
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


@pytest.mark.quick
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


@pytest.mark.quick
def test_planted_fixation_on_planted_object_scores_high(tmp_path):
    trial = read_trial(write_trial(tmp_path / "breakout"))

    def everywhere(obs, *_):  # the objects on a floor of 1: no pixel at 0, so KL is defined on every frame
        return stack_max(obs) + 1

    scores = trial_metrics(everywhere, trial)
    assert scores["nss"] > 2
    assert 0.5 < scores["sauc"] <= 1.0
    assert scores["kl"] is not None and scores["kl"] >= 0
    # control: a map of the opposite corner is anti-correlated with where the human looked
    elsewhere = trial_metrics(lambda obs, *_: torch.flip(everywhere(obs), dims=(1, 2)), trial)
    assert elsewhere["nss"] < 0 and elsewhere["kl"] > scores["kl"] and elsewhere["sauc"] < scores["sauc"]
    # the maps as they are (0 off the objects) miss the blurred fixations somewhere: KL is undefined (eq. 2)
    assert trial_metrics(stack_max, trial)["kl"] is None


@pytest.mark.quick
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


@pytest.mark.quick
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
    command = [
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
        "--figure-observations",
        "3",
    ]
    proc = subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    # the shuffled AUC's negatives: both trials' fixations, 2 x (13 on the square + 4 on the object)
    assert "shuffled-AUC negatives: 34 fixations in all 2 trials" in proc.stdout
    rows = list(csv.DictReader(open(out / "Breakout_saliency_metrics.csv")))
    assert [r["model"] for r in rows] == ["sparse_fls", "CWCA", "topdown"]
    for row in rows:
        assert row["trials"] == "2" and row["seeds"] == "1" and row["frames"] == "14"  # 2 trials x 7 observations
        assert -10 < float(row["nss"]) < 10 and 0 <= float(row["sauc"]) <= 1
        assert row["kl"] == "" or float(row["kl"]) >= 0  # undefined where a map is 0 under every fixated frame's blur
        assert row["nss_std"] == ""  # one seed: no spread
    table = (out / "Breakout_saliency_metrics.md").read_text()
    assert "| sparse_fls (1 seed) |" in table and "NSS" in table and "sAUC" in table
    assert all(f"KL of {row['model']} on {row['kl_defined']} of 14" in table for row in rows if row["kl_defined"] != "14")
    # Fig. 5: the frame, then one panel per model, fixations in red
    figure = matplotlib.image.imread(out / "Breakout_fixations_100_RZ_1234567_Jan-01-00-00-00_obs3.png")
    assert figure.shape[1] > 2.3 * figure.shape[0]
    red = (figure[..., 0] > 0.8) & (figure[..., 1] < 0.3) & (figure[..., 2] < 0.3)
    assert red.sum() > 4 * 4  # a dot on each of the 4 panels
    # a second run (one model, one trial, the earlier spread) keeps the first tables and writes -2
    command = command[:8] + [trained_checkpoints["ppo_atari_fls.py"], "--out", out, "--spread", "trials", "--max-trials", "1"]
    proc = subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    assert "1 of 2 trials scored; shuffled-AUC negatives: 34 fixations in all 2 trials" in proc.stdout
    assert len(list(csv.DictReader(open(out / "Breakout_saliency_metrics.csv")))) == 3  # the first table, kept
    (row,) = list(csv.DictReader(open(out / "Breakout_saliency_metrics-2.csv")))
    assert (row["model"], row["trials"], row["nss_std"]) == ("sparse_fls", "1", "0.0") and "checkpoint" in row


def left_half(observations, *_):
    """A saliency of 1 on the left half of the 84x84 grid, 0 on the right (bilinearly upsampled, columns
    0-40 and 43-83 of 160 stay exactly 1 and 0)."""
    maps = torch.zeros(len(observations), 84, 84)
    maps[:, :, :42] = 1
    return maps


def one_observation_trial():
    """16 blank frames -> 1 observation (frames 2, 3, 6, 7, 10, 11, 14, 15). Frame 2 (in it) is looked at on
    the left (saliency 1); frame 0 (not in it) twice on the right (0), frame 1 once on the left (1)."""
    gazes = [np.zeros((0, 2), dtype=np.float32) for _ in range(16)]
    gazes[0] = np.array([[150.0, 100.0], [150.0, 100.0]], dtype=np.float32)
    gazes[1] = np.array([[20.0, 100.0]], dtype=np.float32)
    gazes[2] = np.array([[10.0, 100.0]], dtype=np.float32)
    return Trial("hand", np.zeros((16, 210, 160, 3), dtype=np.uint8), gazes)


@pytest.mark.quick
def test_shuffled_auc_negatives_are_the_datasets_other_fixations():
    """The positive (saliency 1) against the other frames' fixations, each counted: 0 twice and 1 once ->
    (2 x 1 + 1 x 1/2) / 3 = 5/6. Three more fixations elsewhere in the dataset on the left (1): (2 + 4/2) / 6.
    The earlier variant (other observations of the same trial) has no negatives here: undefined."""
    trial = one_observation_trial()
    scores, _ = observation_scores(left_half, trial)  # this trial as the whole dataset
    assert scores["sauc"] == [pytest.approx(5 / 6)]
    elsewhere = np.zeros((210, 160))
    elsewhere[100, 20] = 3
    scores, _ = observation_scores(left_half, trial, fixation_map(trial.gazes) + elsewhere)
    assert scores["sauc"] == [pytest.approx(2 / 3)]
    scores, _ = observation_scores(left_half, trial, sauc_negatives="trial")
    assert scores["sauc"] == [None]


@pytest.mark.quick
def test_kl_normalisation_reaches_the_metric():
    """The left-half map is 0 within the blur of no fixation of the observation (x = 10 is 20+ pixels from the
    right half): defined either way, but the min-max reading of section 4.3 gives another number."""
    trial = one_observation_trial()
    distribution = observation_scores(left_half, trial)[0]["kl"][0]
    literal = observation_scores(left_half, trial, kl_normalisation="min-max")[0]["kl"][0]
    assert distribution is not None and literal is not None and distribution != pytest.approx(literal)


@pytest.mark.quick
def test_dataset_fixations_sum_all_label_files(tmp_path):
    first, second = write_trial(tmp_path), write_trial(tmp_path, name="101_RZ_1234568_Jan-01-00-10-00")
    total = dataset_fixations([read_labels(p.with_suffix("").with_suffix(".txt")) for p in (first, second)])
    assert total.sum() == 2 * 17 and total[65, 105] == 2 * 2  # 13 on the square + 4 on the object per trial


@pytest.mark.quick
def test_summarise_spread_over_seeds_or_trials():
    """Two seeds of model a: seed 1 scores NSS 1, undefined, 3 on trial 1 and 2 on trial 2 (frame mean 2),
    seed 2 scores 4 and undefined, 6 (frame mean 5): a = 3.5 +- sqrt((1.5^2 + 1.5^2) / 1). Per trial, seed 1's
    trial means are 2 and 2: 2 +- 0."""

    def trials(*nss_per_trial):
        return [{"nss": list(values), "kl": [None] * len(values), "sauc": [0.5] * len(values)} for values in nss_per_trial]

    models = [("a", "seed1.cleanrl_model"), ("a", "seed2.cleanrl_model"), ("b", "b.cleanrl_model")]
    scores = [trials([1.0, None, 3.0], [2.0]), trials([4.0], [None, 6.0]), trials([1.0], [1.0])]
    a, b = summarise("Breakout", models, scores)
    assert (a["model"], a["seeds"], a["trials"], a["frames"]) == ("a", 2, 2, 7)
    assert a["nss"] == pytest.approx(3.5) and a["nss_std"] == pytest.approx(math.sqrt(4.5)) and a["nss_defined"] == 5
    assert a["kl"] is None and a["kl_std"] is None and a["sauc"] == pytest.approx(0.5)
    assert (b["model"], b["seeds"], b["nss"], b["nss_std"]) == ("b", 1, 1.0, None)
    per_trial = summarise("Breakout", models, scores, spread="trials")
    assert [row["model"] for row in per_trial] == ["a", "a", "b"]
    assert per_trial[0]["nss"] == pytest.approx(2.0) and per_trial[0]["nss_std"] == pytest.approx(0.0)
    assert per_trial[1]["nss"] == pytest.approx(5.0) and per_trial[1]["nss_std"] == pytest.approx(1.0)


@pytest.mark.quick
def test_fixations_drawn_in_red_on_the_saliency(tmp_path):
    frame = np.zeros((210, 160, 3), dtype=np.uint8)
    saliency = np.zeros((210, 160))
    saliency[60:72, 100:112] = 1
    for gazes, name in [(np.array([[105.0, 65.0], [30.0, 150.0]]), "with.png"), (np.zeros((0, 2)), "without.png")]:
        fixations_on_saliency(str(tmp_path / name), frame, gazes, [saliency, saliency], ["a", "b"], "title")
    with_gazes, without = (matplotlib.image.imread(tmp_path / name) for name in ("with.png", "without.png"))
    assert with_gazes.shape == without.shape and with_gazes.shape[1] > 1.7 * with_gazes.shape[0]  # 3 panels side by side

    def red(image):
        return (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)

    assert red(with_gazes).sum() > 3 * 2 and red(without).sum() == 0
    assert ((without[..., 1] > 0.8) & (without[..., 0] < 0.2)).sum() > 2 * 12 * 12  # the saliency, green on black


@pytest.mark.quick
@pytest.mark.parametrize(
    "line, problem",
    [
        ("RZ_1,0,0,50,0,0", "6 fields"),
        ("RZ_1,0,0,50,0,0,10.5", "1 gaze coordinates, an odd number"),
        ("RZ_1,0,0,50,0,0,10.5,abc", "a gaze coordinate of '10.5,abc' is not a number"),
        ("RZ_1,zero,0,50,0,0,null", "episode_id 'zero' or unclipped_reward '0' is neither a number nor null"),
    ],
)
def test_malformed_labels_name_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "trial.txt"
    path.write_text(
        f"frame_id,episode_id,score,duration(ms),unclipped_reward,action,gaze_positions\nRZ_0,0,0,50,0,0,null\n{line}\n"
    )
    with pytest.raises(SystemExit) as error:
        read_labels(path)
    assert str(error.value) == f"error: {path}, line 3: {problem}; expected {LABELS_FORMAT}"


@pytest.mark.quick
def test_bad_arguments_are_refused_before_any_work(tmp_path):
    """Each one line naming the problem, before a frame is decoded or a model loaded (the checkpoint is a
    dummy file that would fail to load)."""
    dataset = tmp_path / "breakout"
    write_trial(dataset)
    checkpoint = tmp_path / "dummy.cleanrl_model"
    checkpoint.write_text("not loaded")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "empty").mkdir()

    def refusal(**changes):
        settings = dict(dataset=str(dataset), checkpoints=(str(checkpoint),), out=str(tmp_path / "out"))
        with pytest.raises(SystemExit) as error:
            main(Args(**{**settings, **changes}))
        return str(error.value)

    assert refusal(dataset=str(tmp_path / "nowhere")).startswith(f"error: --dataset {tmp_path / 'nowhere'}: no such folder")
    assert refusal(dataset=str(a_file)).startswith(f"error: --dataset {a_file} is a file")
    assert refusal(dataset=str(tmp_path / "empty")).startswith("error: no Atari-HEAD trial")
    assert refusal(checkpoints=()) == "error: give at least one checkpoint with --checkpoints"
    assert refusal(checkpoints=(str(tmp_path / "x.cleanrl_model"),)).startswith(
        f"error: --checkpoints {tmp_path / 'x.cleanrl_model'}: no such file or folder"
    )
    assert refusal(max_trials=-1) == "error: --max-trials -1: must be at least 0"
    assert refusal(negatives_per_frame=0) == "error: --negatives-per-frame 0: must be at least 1"
    assert refusal(out=str(a_file)).startswith(f"error: --out {a_file} is a file")
    assert refusal(figure_observations=(7,)).startswith("error: --figure-observations 7: trial 100_RZ_1234567")
    assert refusal(figure_observations=(1,), figure_trial="nope").startswith("error: --figure-trial nope is not among")
    assert not (tmp_path / "out").exists()


@pytest.mark.quick
def test_malformed_labels_file_stops_the_command_in_one_line(tmp_path):
    """Through the real entry point: exit status 1, the file and line named, no traceback, no output written."""
    dataset = tmp_path / "breakout"
    write_trial(dataset)
    archive = write_trial(dataset, name="101_RZ_1234568_Jan-01-00-10-00")
    labels = archive.with_suffix("").with_suffix(".txt")
    lines = labels.read_text().splitlines()
    lines[4] = lines[4] + ",17.0"  # frame 3 looked at once: now an odd number of gaze coordinates on line 5
    labels.write_text("\n".join(lines) + "\n")
    checkpoint = tmp_path / "dummy.cleanrl_model"
    checkpoint.write_text("never loaded")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_utils.atari_head",
            "--dataset",
            dataset,
            "--checkpoints",
            checkpoint,
            "--out",
            tmp_path / "o",
        ],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {labels}, line 5: 3 gaze coordinates, an odd number; expected {LABELS_FORMAT}"
    ]
    assert not (tmp_path / "o").exists()
