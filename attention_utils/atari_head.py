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
to 210x160 (bilinear) and the metrics are computed per observation (`attention_utils.metrics`): KL with
both maps as distributions (eq. 2), the shuffled AUC against every fixation of the dataset's other frames
(all trials' label files are read first, also with --max-trials). As Table 4: a checkpoint (a training
seed) scores the mean over all frames where a metric is defined, a model the mean +- standard deviation
over its seeds (`--spread trials`: per checkpoint over its trials instead). `--figure-observations` draws
Fig. 5: a frame with each model's saliency and the human's fixations in red.

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
from typing import Callable, Literal, Optional

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
import tyro

from attention_utils.cli_checks import check_at_least, check_checkpoint_exists, check_output_folder, free_path
from attention_utils.metrics import KlNormalisation, kl_divergence, mean_defined, nss, shuffled_auc
from attention_utils.runs import atomic_open, save_figure

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


LABELS_FORMAT = "frame_id,episode_id,score,duration(ms),unclipped_reward,action,gaze_positions (gazes as x,y pairs or null)"


def read_labels(path: Path) -> list[tuple[str, int, float, np.ndarray]]:
    """(frame_id, episode id or -1, unclipped reward or 0, (K, 2) gaze positions) per row of an Atari-HEAD
    label file (`null` fields count as missing). A malformed file ends the command with one line naming
    the file and the line."""
    with open(path) as f:
        lines = f.read().splitlines()
    if not lines or not lines[0].strip():
        sys.exit(f"error: {path} is empty; an Atari-HEAD label file starts with the header {LABELS_FORMAT}")
    if not lines[0].startswith("frame_id"):
        sys.exit(f"error: {path}, line 1: not an Atari-HEAD label file header; expected {LABELS_FORMAT}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.strip().split(",")

        def bad(what):
            sys.exit(f"error: {path}, line {number}: {what}; expected {LABELS_FORMAT}")

        if len(parts) < 7:
            bad(f"{len(parts)} fields")
        if not parts[0]:
            bad("no frame_id")
        episode, reward = _number_or_null(parts[1], -1), _number_or_null(parts[4], 0.0)
        if episode is None or reward is None:
            bad(f"episode_id {parts[1]!r} or unclipped_reward {parts[4]!r} is neither a number nor null")
        values = parts[6:]
        if values == ["null"] or values == [""]:
            gaze = np.zeros((0, 2), dtype=np.float32)
        else:
            if len(values) % 2:
                bad(f"{len(values)} gaze coordinates, an odd number")
            try:
                gaze = np.asarray(values, dtype=np.float32).reshape(-1, 2)  # (K, 2): x, y
            except ValueError:
                bad(f"a gaze coordinate of {','.join(values)!r} is not a number")
        rows.append((parts[0], int(episode), reward, gaze))
    return rows


def _number_or_null(text: str, missing: float) -> Optional[float]:
    """The number in `text`, `missing` for `null` or an empty field, None for anything else."""
    if text in ("null", ""):
        return missing
    try:
        return float(text)
    except ValueError:
        return None


def labels_path_of(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(".tar.bz2") + ".txt")


def read_trial(archive: Path, labels: Optional[list] = None) -> Trial:
    """Frames and gazes of one trial: `{trial}.tar.bz2` and the `{trial}.txt` beside it (`labels`: that file
    already read by `read_labels`)."""
    labels_path = labels_path_of(archive)
    if labels is None:
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
    """The trials (`*.tar.bz2` with their `.txt` beside them) under `dataset`, searched recursively, sorted."""
    if not Path(dataset).exists():
        sys.exit(f"error: --dataset {dataset}: no such folder; give the folder holding a game's Atari-HEAD trials")
    if not Path(dataset).is_dir():
        sys.exit(f"error: --dataset {dataset} is a file; give the folder holding a game's Atari-HEAD trials")
    trials = sorted(p for p in Path(dataset).rglob("*.tar.bz2") if labels_path_of(p).is_file())
    if not trials:
        sys.exit(f"error: no Atari-HEAD trial (a .tar.bz2 with its .txt beside it) under {dataset}")
    return trials


def num_observations(num_frames: int) -> int:
    """How many observations `preprocess` makes of a trial's frames: a pooled image per 4 frames, 4 per observation."""
    return max(num_frames // 4 - 3, 0)


def preprocess(frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """(F, 210, 160, 3) frames -> observations (M, 4, 84, 84) uint8 and, for each, the indices of the 8
    frames behind it (M, 8). Image k max-pools frames 4k+2 and 4k+3 (grey) and is resized to 84x84 with
    area averaging; observation m stacks images m..m+3."""
    grey = torch.from_numpy(frames.astype(np.float32) @ GREY_WEIGHTS)  # (F, 210, 160)
    num_images = len(frames) // 4
    num_obs = num_observations(len(frames))
    kept = (
        torch.stack([grey[4 * k + 2 : 4 * k + 4].amax(0) for k in range(num_images)]) if num_images else grey[:0]
    )  # (K, 210, 160)
    small = F.interpolate(kept[:, None], size=(84, 84), mode="area")[:, 0].round().to(torch.uint8)  # (K, 84, 84)
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


SaucNegatives = Literal["dataset", "trial"]


def dataset_fixations(labels: list[list[tuple]]) -> np.ndarray:
    """The fixation map (210, 160) of every row of every label file given (`read_labels` of each trial): where
    the shuffled AUC's negatives come from, the "real fixations for other frames in the same dataset"."""
    return fixation_map([gaze for rows in labels for (_, _, _, gaze) in rows])


def observation_scores(
    saliency_fn: SaliencyFn,
    trial: Trial,
    all_fixations: Optional[np.ndarray] = None,
    sauc_negatives: SaucNegatives = "dataset",
    negatives_per_frame: int = 32,
    kl_normalisation: KlNormalisation = "distribution",
    batch_size: int = 64,
    seed: int = 0,
    keep: tuple[int, ...] = (),
) -> tuple[dict[str, list[Optional[float]]], dict[int, np.ndarray]]:
    """NSS, KL and shuffled AUC of each observation of one trial (None where undefined), and the 210x160
    saliency of the observations listed in `keep`. `saliency_fn` gets the trial's observations in order with
    the rewards and episode ends between them (`step_rewards_and_episode_ends`).

    The shuffled AUC's negatives (`sauc_negatives`):
    - "dataset" (section 4.3): every fixation of the dataset's other frames, each counted (`all_fixations`,
      the map of all label rows of all trials read, `dataset_fixations`, less this observation's own 8
      frames; None: this trial is the whole dataset);
    - "trial" (the earlier variant here): the fixated pixels of `negatives_per_frame` other observations of
      this trial drawn at random, each pixel once, this observation's own pixels left out."""
    observations, frame_indices = preprocess(trial.frames)
    fixations = [fixation_map([trial.gazes[i] for i in indices]) for indices in frame_indices]
    if sauc_negatives == "dataset" and all_fixations is None:
        all_fixations = fixation_map(trial.gazes)
    with torch.no_grad():
        maps = saliency_fn(observations, *step_rewards_and_episode_ends(trial, len(observations)))  # (M, 84, 84)
    rng = np.random.default_rng(seed)
    scores, kept = {"nss": [], "kl": [], "sauc": []}, {}
    for start in range(0, len(observations), batch_size):
        small = maps[start : start + batch_size].float()  # (B, 84, 84)
        large = F.interpolate(small[:, None], size=SCREEN, mode="bilinear", align_corners=False)[:, 0].numpy()  # (B, 210, 160)
        for offset, saliency in enumerate(large):
            m = start + offset
            if m in keep:
                kept[m] = saliency
            if sauc_negatives == "dataset":
                other_fixations = all_fixations - fixations[m]  # the 8 frames' fixations are in the total once
            else:
                others = [
                    i
                    for i in rng.choice(len(fixations), size=min(negatives_per_frame + 1, len(fixations)), replace=False)
                    if i != m
                ][:negatives_per_frame]
                other_fixations = sum((fixations[i] for i in others), np.zeros(SCREEN))
            scores["nss"].append(nss(saliency, fixations[m]))
            scores["kl"].append(kl_divergence(saliency, fixations[m], normalisation=kl_normalisation))
            scores["sauc"].append(
                shuffled_auc(saliency, fixations[m], other_fixations, count_weighted=sauc_negatives == "dataset")
            )
    return scores, kept


def trial_metrics(
    saliency_fn: SaliencyFn, trial: Trial, negatives_per_frame: int = 32, **options
) -> dict[str, Optional[float]]:
    """`observation_scores` averaged over the trial's observations (undefined ones dropped); `options` are
    `observation_scores`'s (the default negatives: this trial as the whole dataset)."""
    scores, _ = observation_scores(saliency_fn, trial, negatives_per_frame=negatives_per_frame, **options)
    return {name: mean_defined(values) for name, values in scores.items()}


METRICS = ("nss", "kl", "sauc")
Spread = Literal["seeds", "trials"]


def summarise(game: str, models: list[tuple[str, str]], scores: list[list[dict]], spread: Spread = "seeds") -> list[dict]:
    """Table 4's rows. `models`: (variant, checkpoint) per checkpoint; `scores[c][t]`: checkpoint c's
    per-observation scores on trial t (`observation_scores`).

    - "seeds" (Table 4): a row per variant. Each checkpoint (a training seed) scores the mean of its defined
      per-frame values over all frames of all trials ("we averaged per-frame metrics over gameplay
      recordings, dropping frames with undefined metrics"); the row is the mean over its checkpoints ± their
      standard deviation (n - 1 in the denominator; None for a single seed).
    - "trials": a row per checkpoint: the mean of its per-trial means ± their standard deviation (n).
    `frames` counts the (checkpoint, observation) pairs scored, `{metric}_defined` those where it is defined."""
    groups = {}
    for index, (variant, checkpoint) in enumerate(models):
        key = variant if spread == "seeds" else index
        groups.setdefault(key, []).append(index)
    rows = []
    for indices in groups.values():
        variant = models[indices[0]][0]
        row = {"game": game, "model": variant}
        if spread == "seeds":
            row["seeds"] = len(indices)
            row["checkpoints"] = ";".join(str(Path(models[i][1]).resolve()) for i in indices)
        else:
            row["checkpoint"] = str(Path(models[indices[0]][1]).resolve())
        row["trials"] = len(scores[indices[0]])
        row["frames"] = sum(len(trial["nss"]) for i in indices for trial in scores[i])
        for metric in METRICS:
            if spread == "seeds":
                values = [mean_defined([v for trial in scores[i] for v in trial[metric]]) for i in indices]
            else:
                values = [mean_defined(trial[metric]) for trial in scores[indices[0]]]
            values = [v for v in values if v is not None]
            row[metric] = float(np.mean(values)) if values else None
            if spread == "seeds":
                row[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            else:
                row[f"{metric}_std"] = float(np.std(values)) if values else None
            row[f"{metric}_defined"] = sum(v is not None for i in indices for trial in scores[i] for v in trial[metric])
        rows.append(row)
    return rows


def fixations_on_saliency(
    path: str, frame: np.ndarray, gazes: np.ndarray, maps: list[np.ndarray], titles: list[str], suptitle: str
) -> None:
    """Fig. 5: an Atari-HEAD frame (210, 160, 3) once alone and once per model with that model's saliency
    (210, 160) drawn in green (min-max scaled, over the darkened frame), the human's fixations (K, 2) as red
    dots on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.1 * (len(maps) + 1), 3.3), squeeze=False)
    panels = [(frame, "frame")]
    for saliency, title in zip(maps, titles):
        low, high = float(saliency.min()), float(saliency.max())
        weight = (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)  # (210, 160) in [0, 1]
        image = 0.6 * frame.astype(np.float32)  # (210, 160, 3), darkened so the map stands out
        image[..., 1] += (255.0 - image[..., 1]) * weight  # in green: the game draws white objects itself
        panels.append((image.astype(np.uint8), title))
    for ax, (image, title) in zip(axes[0], panels):
        ax.imshow(image)
        if len(gazes):
            ax.scatter(gazes[:, 0], gazes[:, 1], s=9, c="red", marker="o", linewidths=0)
        ax.set_xlim(-0.5, SCREEN[1] - 0.5)
        ax.set_ylim(SCREEN[0] - 0.5, -0.5)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


@dataclass
class Args:
    dataset: str
    """folder with the game's trials (`*.tar.bz2` + `*.txt`), searched recursively"""
    checkpoints: tuple[str, ...]
    """checkpoints of the models to score (any script whose agent has attention; recurrent agents see each trial in
    order); several seeds of one model make one row of the table, its mean ± the spread over them"""
    out: str
    """folder for `{game}_saliency_metrics.csv` and `.md` (and the figures); files already there are kept (`-2`, ...)"""
    game: str = "Breakout"
    """the game the trials are of"""
    max_trials: int = 0
    """score only the first N trials (0 = all); the shuffled AUC's negatives still come from all of them"""
    spread: Spread = "seeds"
    """"seeds": a row per model, mean ± standard deviation over its checkpoints (seeds), each the mean over all
    frames (Table 4); "trials": a row per checkpoint, mean ± standard deviation over its trials' means"""
    kl_normalisation: KlNormalisation = "distribution"
    """"distribution": both maps divided by their sums, frames where the divergence is infinite dropped (eq. 2);
    "min-max": section 4.3's "normalized to [0..1]" literally; "epsilon": the MIT saliency benchmark's regulariser"""
    sauc_negatives: SaucNegatives = "dataset"
    """"dataset": every fixation of the other frames of all trials under --dataset (section 4.3); "trial":
    the fixated pixels of --negatives-per-frame other observations of the same trial, each pixel once"""
    negatives_per_frame: int = 32
    """with --sauc-negatives trial: other observations whose fixations are the shuffled AUC's negatives"""
    figure_observations: tuple[int, ...] = ()
    """Fig. 5: observations (index in their trial) of --figure-trial drawn with each model's saliency and the
    human's fixations in red, one PNG each"""
    figure_trial: Optional[str] = None
    """the trial (file name without .tar.bz2) of --figure-observations; default: the first one scored"""


def check_args(args: Args) -> None:
    """Everything that can be checked without reading a frame or loading a model."""
    if not args.checkpoints:
        sys.exit("error: give at least one checkpoint with --checkpoints")
    for path in args.checkpoints:
        check_checkpoint_exists(path, "--checkpoints")
    check_at_least("--max-trials", args.max_trials, 0)
    check_at_least("--negatives-per-frame", args.negatives_per_frame, 1)
    for index in args.figure_observations:
        check_at_least("--figure-observations", index, 0)
    if args.figure_trial is not None and not args.figure_observations:
        sys.exit("error: --figure-trial without --figure-observations; give the observations to draw")
    check_output_folder(args.out)


def main(args: Args) -> list[dict]:
    check_args(args)
    trials = list_trials(Path(args.dataset))
    labels = [read_labels(labels_path_of(path)) for path in trials]  # every label file checked before any work
    all_fixations = dataset_fixations(labels)
    scored = list(range(len(trials)))[: args.max_trials or None]
    names = [path.name.removesuffix(".tar.bz2") for path in trials]
    figure_trial, read = None, {}
    if args.figure_observations:
        figure_trial = (
            scored[0] if args.figure_trial is None else next((t for t in scored if names[t] == args.figure_trial), None)
        )
        if figure_trial is None:
            sys.exit(
                f"error: --figure-trial {args.figure_trial} is not among the trials scored; give one of "
                + ", ".join(names[t] for t in scored)
            )
        read[figure_trial] = read_trial(trials[figure_trial], labels[figure_trial])
        count = num_observations(len(read[figure_trial].frames))
        too_large = [m for m in args.figure_observations if m >= count]
        if too_large:
            sys.exit(
                f"error: --figure-observations {too_large[0]}: trial {names[figure_trial]} has {count} observations "
                f"(0 .. {count - 1})"
            )

    from attention_utils.checkpoints import load_agent, require_grey_frames, sequence_saliency

    models = [load_agent(path) for path in args.checkpoints]
    for loaded in models:  # Atari-HEAD frames are made into the grey stacks every other script's agents see
        require_grey_frames(loaded, "atari_head")
    saliency_fns = [sequence_saliency(loaded) for loaded in models]
    for checkpoint, loaded, saliency_fn in zip(args.checkpoints, models, saliency_fns):  # before any scoring
        if saliency_fn is None:
            sys.exit(f"error: {checkpoint}: {loaded.variant} has no spatial attention map, so no saliency to score")
    print(
        f"{len(scored)} of {len(trials)} trials scored; shuffled-AUC negatives: "
        + (
            f"{int(all_fixations.sum())} fixations in all {len(trials)} trials"
            if args.sauc_negatives == "dataset"
            else f"{args.negatives_per_frame} other observations of the same trial"
        ),
        flush=True,
    )
    scores = [[] for _ in models]  # scores[c][t]: per-observation scores of checkpoint c on trial t
    figure_maps = [{} for _ in models]
    for t in scored:
        trial = read.pop(t, None) or read_trial(trials[t], labels[t])
        for c, saliency_fn in enumerate(saliency_fns):
            trial_scores, kept = observation_scores(
                saliency_fn,
                trial,
                all_fixations,
                args.sauc_negatives,
                args.negatives_per_frame,
                args.kl_normalisation,
                keep=args.figure_observations if t == figure_trial else (),
            )
            scores[c].append(trial_scores)
            figure_maps[c].update(kept)
        if t == figure_trial:
            figure_frames = trial
    rows = summarise(
        args.game, [(loaded.variant, path) for loaded, path in zip(models, args.checkpoints)], scores, args.spread
    )
    for row in rows:
        print(
            f"{args.game} {row['model']}: "
            + ", ".join(f"{m} {row[m]:.3f}" if row[m] is not None else f"{m} undefined" for m in METRICS)
        )
    os.makedirs(args.out, exist_ok=True)
    base = free_path(os.path.join(args.out, f"{args.game}_saliency_metrics"), (".csv", ".md"))
    with atomic_open(f"{base}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def cell(row, metric):
        if row[metric] is None:
            return "undefined"
        return f"{row[metric]:.3f}" + ("" if row[f"{metric}_std"] is None else f" ± {row[f'{metric}_std']:.3f}")

    def name(row):
        return f"{row['model']} ({row['seeds']} seed{'s' * (row['seeds'] > 1)})" if args.spread == "seeds" else row["model"]

    spread = (
        "Each seed (checkpoint): the mean of a metric over all frames of all trials where it is defined; "
        "mean ± standard deviation over seeds (n - 1; none for one seed)."
        if args.spread == "seeds"
        else "Each checkpoint: mean ± standard deviation (n) over its trials' means."
    )
    lines = [f"| {args.game} | NSS ↑ | KL ↓ | sAUC ↑ |", "|---|---|---|---|"]
    lines += [f"| {name(row)} | {cell(row, 'nss')} | {cell(row, 'kl')} | {cell(row, 'sauc')} |" for row in rows]
    notes = f"{len(scored)} trials. {spread} KL: {args.kl_normalisation} normalisation; shuffled-AUC negatives: " + (
        "the other frames' fixations of all trials." if args.sauc_negatives == "dataset" else "same trial."
    )
    undefined = [
        f"{metric.upper() if metric != 'sauc' else 'sAUC'} of {row['model']} on {row[f'{metric}_defined']} of {row['frames']}"
        for row in rows
        for metric in METRICS
        if row[f"{metric}_defined"] < row["frames"]
    ]
    if undefined:
        notes += " Undefined frames are dropped; defined: " + ", ".join(undefined) + "."
    with atomic_open(f"{base}.md", "w") as f:
        f.write("\n".join(lines) + f"\n\n{notes}\n")
    print(f"tables: {base}.csv, {base}.md")
    if figure_trial is not None:
        _, frame_indices = preprocess(figure_frames.frames)
        titles = [loaded.variant for loaded in models]
        titles = [f"{t} #{titles[:i].count(t) + 1}" if titles.count(t) > 1 else t for i, t in enumerate(titles)]
        for m in args.figure_observations:
            indices = frame_indices[m]
            gazes = np.concatenate([figure_frames.gazes[i] for i in indices])  # (K, 2) of the 8 frames
            path = free_path(os.path.join(args.out, f"{args.game}_fixations_{names[figure_trial]}_obs{m}.png"))
            fixations_on_saliency(
                path,
                figure_frames.frames[indices[-1]],
                gazes,
                [figure_maps[c][m] for c in range(len(models))],
                titles,
                f"{args.game}, trial {names[figure_trial]}, observation {m}: saliency (green), human fixations (red)",
            )
            print(f"figure: {path}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
