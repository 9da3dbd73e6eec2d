"""Atari-HEAD (Zhang et al., "Atari-HEAD: Atari Human Eye-Tracking and Demonstration Dataset") against
agents' saliency, as Free-Lunch Saliency (section 4.3, Table 4) does it.

On disk, a game's folder holds one pair per trial (a play session):
    {trial}.tar.bz2   the frames, `{frame_id}.png`, 210x160 RGB (in a folder named after the trial)
    {trial}.txt       `frame_id,episode_id,score,duration(ms),unclipped_reward,action,gaze_positions`, one row per
                      frame, the gaze positions trailing the row as x0,y0,x1,y1,... in frame pixels, or `null`
and the dataset's `meta_data.csv` (not needed here: the game is given on the command line).

The pipeline follows the agents' preprocessing: of every 4 consecutive frames the last two are kept and
max-pooled into one 84x84 grey image, 4 such images make an observation, so an observation covers 8
kept frames and its ground truth is the union of their fixations. The agent's 84x84 saliency is brought
to 210x160 (bilinear), the metrics are computed per observation, averaged per trial (undefined ones
dropped), and tabulated per model as mean +- standard deviation over trials.

A trial's observations are consecutive, so a recurrent agent (ppo_atari_topdown.py) sees them in order
with its state carried from one to the next (`checkpoints.sequence_saliency`), starting afresh at the
trial's start and wherever the label file's episode id changes. What it is told besides the frames:
- previous reward: the labels' unclipped rewards of the 4 frames of the step, clipped to their sign as in
  training (these are the rewards the human's play really earned);
- previous action: the agent's own most probable action at the previous observation. The human's
  keystrokes are not used: they are in the full 18-action set, several per agent step, while the agent
  knows only its game's minimal set; its own choice is always a valid input and is what it would have
  done. The frames still follow the human's play either way.
Lives are not in the labels, so a lost life does not reset the state as it does in training.

    python -m attention_utils.atari_head --dataset atari_head/breakout --game Breakout \\
        --checkpoints runs/a/step_012499968.cleanrl_model runs/b/step_012499968.cleanrl_model --out results/atari_head
"""

import csv
import io
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
import tyro

from attention_utils.metrics import kl_divergence, mean_defined, nss, shuffled_auc

SCREEN = (210, 160)  # Atari frame, rows x columns
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as cv2's RGB2GRAY
# (observations (T, 4, 84, 84) uint8 of one trial in order, rewards (T,), episode_ends (T,) bool) -> (T, 84, 84);
# see checkpoints.sequence_saliency for what the rewards and episode ends mean
SaliencyFn = Callable[[torch.Tensor, np.ndarray, np.ndarray], torch.Tensor]


@dataclass
class Trial:
    name: str
    frames: np.ndarray
    """(F, 210, 160, 3) uint8, in the label file's order"""
    gazes: list[np.ndarray] = field(repr=False)
    """per frame, (K, 2) float gaze positions (x = column, y = row), K may be 0"""
    rewards: Optional[np.ndarray] = field(default=None, repr=False)
    """per frame, the unclipped reward (0 where the labels have none); None: unknown, all 0"""
    episodes: Optional[np.ndarray] = field(default=None, repr=False)
    """per frame, the episode id (-1 where the labels have none); None: unknown, one episode"""


def read_labels(path: Path) -> list[tuple[str, int, float, np.ndarray]]:
    """(frame_id, episode id or -1, unclipped reward or 0, (K, 2) gaze positions) per row of an Atari-HEAD
    label file (`null` fields count as missing)."""
    rows = []
    with open(path) as f:
        header = f.readline()
        if not header.startswith("frame_id"):
            sys.exit(f"error: {path} is not an Atari-HEAD label file (its first line should start with frame_id)")
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 7:
                continue
            values = parts[6:]
            if values[0] == "null" or values == [""]:
                gaze = np.zeros((0, 2), dtype=np.float32)
            else:
                gaze = np.asarray(values, dtype=np.float32).reshape(-1, 2)  # (K, 2): x, y
            rows.append((parts[0], int(_number_or(parts[1], -1)), _number_or(parts[4], 0.0), gaze))
    return rows


def _number_or(text: str, missing: float) -> float:
    try:
        return float(text)
    except ValueError:  # `null` or empty
        return missing


def read_trial(archive: Path) -> Trial:
    """Frames and gazes of one trial: `{trial}.tar.bz2` and the `{trial}.txt` beside it."""
    labels_path = archive.with_name(archive.name.removesuffix(".tar.bz2") + ".txt")
    if not labels_path.is_file():
        sys.exit(f"error: {archive} has no label file {labels_path.name} beside it")
    labels = read_labels(labels_path)
    images = {}
    with tarfile.open(archive, "r:bz2") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".png"):
                images[Path(member.name).stem] = iio.imread(io.BytesIO(tar.extractfile(member).read()))
    frames, gazes, episodes, rewards = [], [], [], []
    for frame_id, episode, reward, gaze in labels:
        if frame_id in images:  # rows without an image (e.g. the last one of an interrupted trial) are skipped
            frames.append(images[frame_id][..., :3])
            gazes.append(gaze)
            episodes.append(episode)
            rewards.append(reward)
    if not frames:
        sys.exit(f"error: no frame of {labels_path.name} is in {archive.name}")
    return Trial(archive.name.removesuffix(".tar.bz2"), np.stack(frames), gazes, np.array(rewards), np.array(episodes))


def list_trials(dataset: Path) -> list[Path]:
    trials = sorted(
        p for p in Path(dataset).rglob("*.tar.bz2") if p.with_name(p.name.removesuffix(".tar.bz2") + ".txt").is_file()
    )
    if not trials:
        sys.exit(f"error: no Atari-HEAD trial (a .tar.bz2 with its .txt beside it) under {dataset}")
    return trials


def preprocess(frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """(F, 210, 160, 3) frames -> observations (M, 4, 84, 84) uint8 and, for each, the indices of the 8
    frames behind it (M, 8). Image k max-pools frames 4k+2 and 4k+3 (grey) and is resized to 84x84 with
    area averaging; observation m stacks images m..m+3."""
    grey = torch.from_numpy(frames.astype(np.float32) @ GREY_WEIGHTS)  # (F, 210, 160)
    num_images = len(frames) // 4
    kept = (
        torch.stack([grey[4 * k + 2 : 4 * k + 4].amax(0) for k in range(num_images)]) if num_images else grey[:0]
    )  # (K, 210, 160)
    small = F.interpolate(kept[:, None], size=(84, 84), mode="area")[:, 0].round().to(torch.uint8)  # (K, 84, 84)
    num_obs = max(num_images - 3, 0)
    observations = (
        torch.stack([small[m : m + 4] for m in range(num_obs)]) if num_obs else torch.zeros(0, 4, 84, 84, dtype=torch.uint8)
    )
    frame_indices = np.array(
        [[4 * k + j for k in range(m, m + 4) for j in (2, 3)] for m in range(num_obs)], dtype=int
    ).reshape(-1, 8)
    return observations, frame_indices


def step_rewards_and_episode_ends(trial: Trial, num_observations: int) -> tuple[np.ndarray, np.ndarray]:
    """What a recurrent agent is told between the observations of `preprocess`: (rewards (M,), episode_ends
    (M,) bool). The step from observation m to m + 1 adds pooled image m + 4, i.e. frames 4(m + 4) ..
    4(m + 4) + 3: its reward is their summed unclipped reward; observation m ends its episode when the
    episode id of image m + 4 (its last frame's) differs from image m + 3's. Ids missing on either side
    (-1) end nothing."""
    rewards, episode_ends = np.zeros(num_observations), np.zeros(num_observations, dtype=bool)
    for m in range(num_observations - 1):
        if trial.rewards is not None:
            rewards[m] = trial.rewards[4 * (m + 4) : 4 * (m + 4) + 4].sum()
        if trial.episodes is not None:
            before, after = trial.episodes[4 * (m + 3) + 3], trial.episodes[4 * (m + 4) + 3]
            episode_ends[m] = before >= 0 and after >= 0 and before != after
    return rewards, episode_ends


def fixation_map(gazes: list[np.ndarray]) -> np.ndarray:
    """Counts of fixations per pixel of the 210x160 frame (positions outside the screen are dropped)."""
    counts = np.zeros(SCREEN)
    for gaze in gazes:
        if len(gaze):
            cols, rows = np.floor(gaze[:, 0]).astype(int), np.floor(gaze[:, 1]).astype(int)
            inside = (rows >= 0) & (rows < SCREEN[0]) & (cols >= 0) & (cols < SCREEN[1])
            np.add.at(counts, (rows[inside], cols[inside]), 1)
    return counts


def trial_metrics(
    saliency_fn: SaliencyFn, trial: Trial, negatives_per_frame: int = 32, batch_size: int = 64, seed: int = 0
) -> dict[str, Optional[float]]:
    """NSS, KL and shuffled AUC of one trial: per observation, then averaged (undefined ones dropped).
    `saliency_fn` gets the trial's observations in order with the rewards and episode ends between them
    (`step_rewards_and_episode_ends`). The shuffled AUC's negatives are the fixations of
    `negatives_per_frame` other observations of the trial, drawn at random."""
    observations, frame_indices = preprocess(trial.frames)
    fixations = [fixation_map([trial.gazes[i] for i in indices]) for indices in frame_indices]
    with torch.no_grad():
        maps = saliency_fn(observations, *step_rewards_and_episode_ends(trial, len(observations)))  # (M, 84, 84)
    rng = np.random.default_rng(seed)
    scores = {"nss": [], "kl": [], "sauc": []}
    for start in range(0, len(observations), batch_size):
        small = maps[start : start + batch_size].float()  # (B, 84, 84)
        large = F.interpolate(small[:, None], size=SCREEN, mode="bilinear", align_corners=False)[:, 0].numpy()  # (B, 210, 160)
        for offset, saliency in enumerate(large):
            m = start + offset
            others = [
                i
                for i in rng.choice(len(fixations), size=min(negatives_per_frame + 1, len(fixations)), replace=False)
                if i != m
            ][:negatives_per_frame]
            other_fixations = sum((fixations[i] for i in others), np.zeros(SCREEN))
            scores["nss"].append(nss(saliency, fixations[m]))
            scores["kl"].append(kl_divergence(saliency, fixations[m]))
            scores["sauc"].append(shuffled_auc(saliency, fixations[m], other_fixations))
    return {name: mean_defined(values) for name, values in scores.items()}


@dataclass
class Args:
    dataset: str
    """folder with the game's trials (`*.tar.bz2` + `*.txt`), searched recursively"""
    checkpoints: tuple[str, ...]
    """checkpoints of the models to score (any script whose agent has attention; recurrent agents see each trial in order)"""
    out: str
    """folder for `{game}_saliency_metrics.csv` and `.md`"""
    game: str = "Breakout"
    """the game the trials are of (a table row per model)"""
    max_trials: int = 0
    """score only the first N trials (0 = all)"""
    negatives_per_frame: int = 32
    """other observations whose fixations are the shuffled AUC's negatives"""


def main(args: Args) -> list[dict]:
    from attention_utils.checkpoints import load_agent, sequence_saliency

    trials = list_trials(Path(args.dataset))[: args.max_trials or None]
    models = [load_agent(path) for path in args.checkpoints]
    if not models:
        sys.exit("error: give at least one checkpoint with --checkpoints")
    saliency_fns = [sequence_saliency(loaded) for loaded in models]
    for checkpoint, loaded, saliency_fn in zip(args.checkpoints, models, saliency_fns):  # before any scoring
        if saliency_fn is None:
            sys.exit(f"error: {checkpoint}: {loaded.variant} has no spatial attention map, so no saliency to score")
    rows = []
    for checkpoint, loaded, saliency_fn in zip(args.checkpoints, models, saliency_fns):
        per_trial = [trial_metrics(saliency_fn, read_trial(path), args.negatives_per_frame) for path in trials]
        row = {
            "game": args.game,
            "model": loaded.variant,
            "checkpoint": str(Path(checkpoint).resolve()),
            "trials": len(per_trial),
        }
        for metric in ("nss", "kl", "sauc"):
            values = [t[metric] for t in per_trial if t[metric] is not None]
            row[metric] = float(np.mean(values)) if values else None
            row[f"{metric}_std"] = float(np.std(values)) if values else None
        rows.append(row)
        print(
            f"{args.game} {loaded.variant}: "
            + ", ".join(f"{m} {row[m]:.3f}" if row[m] is not None else f"{m} undefined" for m in ("nss", "kl", "sauc"))
        )
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"{args.game}_saliency_metrics")
    with open(f"{base}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def cell(row, metric):
        return "undefined" if row[metric] is None else f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}"

    lines = [f"| {args.game} | NSS ↑ | KL ↓ | sAUC ↑ |", "|---|---|---|---|"]
    lines += [f"| {row['model']} | {cell(row, 'nss')} | {cell(row, 'kl')} | {cell(row, 'sauc')} |" for row in rows]
    with open(f"{base}.md", "w") as f:
        f.write("\n".join(lines) + f"\n\nMean ± standard deviation over {len(trials)} trials.\n")
    print(f"tables: {base}.csv, {base}.md")
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
