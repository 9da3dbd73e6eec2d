"""Is the attention on the objects? An object-grounded score for an agent's 84x84 attention map, without human
gaze data, beside what maps that know nothing about the agent score on the same frames.

Each agent plays its game on rendered ALE (`checkpoints.PlayedGame`, feed-forward and recurrent agents alike). At
every step the positions of the game's objects are read from the emulator's RAM (`attention_utils.ram_layouts`)
and turned into boxes on the 84x84 observation. Each agent's maps (`--maps`, by default every one it has), all of
the same observations and, where they need one, for the action the agent took:
- `attention`: its own attention, the map every other tool uses (`checkpoints.input_saliency`);
- `perturbation`: perturbation saliency of its policy (`attention_utils.perturbation`, section 4.7 of the top-down
  paper: the action probabilities' change when a Gaussian patch is blurred, on a grid of `--perturbation-stride`);
- `gradcam`, `gradcam++`: Grad-CAM and Grad-CAM++ of the action's logit at the layer `attention_utils.gradcam`
  names.
Per frame, map and object class (ball, player, enemy, ...; `all` = every object):
- NSS at the objects' pixels: Free-Lunch Saliency's eq. (1) with the pixels inside the class's boxes as the
  fixations (`metrics.nss`);
- the share of the map's mass inside the class's boxes, against the boxes' share of the screen (what a uniform
  map gets);
- shuffled AUC (`metrics.shuffled_auc`, count-weighted): the map's values at this frame's object pixels against
  its values at the object pixels of `--negatives` other frames of the same game (a pixel covered in k of them
  weighs k; one covered here too counts on both sides), so a fixed centre or edge bias scores 0.5.

Sanity baselines on the same frames, in the same tables (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps", section 3.1, the model parameter randomisation test, and the usual saliency baselines):
- `{map}_randomised`, each map of the same architecture with freshly initialised weights (the script's own
  `make_agent` with the checkpoint's settings, seed = the run's seed + 1), shown the same frames, explaining the
  same action and, if recurrent, told the same actions, rewards and episode ends;
- `intensity`: the last frame of the observation; `motion`: |last frame - the one before|;
- `centre`: a Gaussian at the centre of the screen (sigma = a quarter of its side), the same on every frame;
plus, per map, the Spearman rank correlation between the trained and the randomised map of each frame (Adebayo et
al.'s similarity measure: a map that barely changes when the weights are randomised explains the image, not the
agent).

Writes into `--out` (default: `objects/` beside the first checkpoint), per game: `{game}_objects.csv` (one row per
agent, frame, map and object class), `{game}_objects.md` (per agent and metric: the maps and baselines x object
classes) and `{game}_objects.png` (frames with each agent's maps, its randomised copy's attention or first map, the
frame difference and the object boxes). Files already there are kept: the new ones get a `-2`, `-3`, ... suffix.

    python -m attention_utils.objects --checkpoint runs/a/step_000500000.cleanrl_model runs/b/step_000500000.cleanrl_model
"""

import csv
import dataclasses
import math
import os
import sys
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro
from scipy.stats import spearmanr

from attention_utils.cli_checks import beside_checkpoint, check_at_least, check_checkpoints, free_path
from attention_utils.metrics import mean_defined, nss, shuffled_auc
from attention_utils.ram_layouts import LAYOUTS, SCREEN, Box, layout_name, object_boxes
from attention_utils.runs import atomic_open, available_cores, save_figure, write_text

GRID = 84  # the observation's side
EXPLANATIONS = ("attention", "perturbation", "gradcam", "gradcam++")  # the maps that explain the agent
BASELINES = ("intensity", "motion", "centre")  # the maps that know nothing about it
MAP_NAMES = {
    "attention": "the agent's attention",
    "perturbation": "perturbation saliency",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "intensity": "last-frame intensity",
    "motion": "frame difference",
    "centre": "centre prior",
}
CENTRE_SIGMA = GRID / 4


@dataclass
class Args:
    checkpoint: tuple[str, ...]
    """`.cleanrl_model` files written by any training script (each agent plays its own game)"""
    game: Optional[str] = None
    """play this game instead of each agent's own (same number of actions; e.g. `BreakoutInfinite`)"""
    frames: int = 300
    """agent steps recorded per agent (the game restarts when it ends)"""
    negatives: int = 32
    """other frames whose object pixels are the shuffled AUC's negatives"""
    seed: int = 8_000_000
    """seed of the played game (training, evaluation and the other tools use other seeds)"""
    maps: tuple[str, ...] = ()
    """maps to score, of `attention`, `perturbation`, `gradcam`, `gradcam++` (default: every one the agent has)"""
    perturbation_stride: int = 5
    """grid step of the perturbation saliency in 84x84 pixels (Greydanus et al.'s 5; 1 = every pixel, 25x slower)"""
    figure_frames: int = 3
    """frames per agent in the figure"""
    out: Optional[str] = None
    """folder for the CSV, table and figure (default: `objects/` beside the first checkpoint)"""
    threads: int = 0
    """torch threads; 0 = one per core this process may use"""


class RamRecorder:
    """Stands in for `RenderedAtari.ale`: passes everything through to the emulator and keeps the RAM after each
    of the last three emulator frames, which is what the boxes of an observation's last image need (it
    max-pools the last two frames of a step, and some objects are drawn from the RAM one frame older)."""

    def __init__(self, ale):
        self.ale = ale
        self.rams = deque([ale.getRAM().copy()] * 3, maxlen=3)

    def act(self, action) -> float:
        reward = self.ale.act(action)
        self.rams.append(self.ale.getRAM().copy())
        return reward

    def __getattr__(self, name):
        return getattr(self.ale, name)


def observation_boxes(game: str, rams) -> list[tuple[str, Box]]:
    """The objects of the observation's last image: the union of its two max-pooled frames' boxes
    (`rams`: the RAM after the last three emulator frames, oldest first)."""
    return object_boxes(game, rams[1], rams[0]) + object_boxes(game, rams[2], rams[1])


def _touched_cells(start: int, stop: int, size: int) -> tuple[int, int]:
    """Cells of the 84-cell axis whose area-resize window (input [floor(i*size/84), ceil((i+1)*size/84)),
    as `F.interpolate(mode="area")` averages) overlaps input pixels [start, stop)."""
    first = max(0, min(GRID, math.floor(start * GRID / size)))
    while first > 0 and math.ceil(first * size / GRID) > start:  # the window of cell `first - 1` may reach `start`
        first -= 1
    while first < GRID and math.ceil((first + 1) * size / GRID) <= start:
        first += 1
    last = first
    while last < GRID and math.floor(last * size / GRID) < stop:
        last += 1
    return first, last


def grid_masks(boxes: list[tuple[str, Box]], kinds: list[str]) -> dict[str, np.ndarray]:
    """Per object class (and `all`), the (84, 84) bool mask of the observation pixels the class's boxes reach:
    every pixel whose area-resize window overlaps a box (the object is part of what that pixel shows)."""
    masks = {kind: np.zeros((GRID, GRID), dtype=bool) for kind in kinds + ["all"]}
    for kind, (top, left, bottom, right) in boxes:
        r0, r1 = _touched_cells(top, bottom, SCREEN[0])
        c0, c1 = _touched_cells(left, right, SCREEN[1])
        masks[kind][r0:r1, c0:c1] = True
        masks["all"][r0:r1, c0:c1] = True
    return masks


def centre_prior() -> np.ndarray:
    """(84, 84) isotropic Gaussian at the centre, sigma = a quarter of the side."""
    coords = np.arange(GRID) - (GRID - 1) / 2
    return np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * CENTRE_SIGMA**2))


def baseline_maps(obs: torch.Tensor) -> dict[str, np.ndarray]:
    """The maps that know nothing about the agent, from the stacked observation (4, 84, 84) uint8."""
    frames = obs.float().numpy()
    return {"intensity": frames[-1], "motion": np.abs(frames[-1] - frames[-2]), "centre": centre_prior()}


def map_names(explanations: list[str]) -> list[str]:
    """The names of every map scored: each explanation and its randomised copy's, then the baselines."""
    return [name for e in explanations for name in (e, f"{e}_randomised")] + list(BASELINES)


def map_title(name: str) -> str:
    base = name.removesuffix("_randomised")
    return MAP_NAMES[base] + (", randomised weights" if name != base else "")


def available_maps(loaded) -> list[str]:
    """The explanations this agent has: perturbation always; its own attention and Grad-CAM where it has them."""
    from attention_utils.checkpoints import input_saliency
    from attention_utils.gradcam import gradcam_layer

    has = {"attention": input_saliency(loaded) is not None, "perturbation": True}
    has["gradcam"] = has["gradcam++"] = gradcam_layer(loaded) is not None
    return [name for name in EXPLANATIONS if has[name]]


def mass_share(saliency: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """The share of the map's mass (negative values count as 0) inside `mask`; None for a map without mass."""
    saliency = np.clip(np.asarray(saliency, np.float64), 0, None)
    total = saliency.sum()
    return float(saliency[mask].sum() / total) if total > 0 else None


def rank_correlation(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation of two maps' pixels; None if either is constant."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return None
    return float(spearmanr(a, b).statistic)


@dataclass
class Recording:
    """What one agent's play left, frame by frame."""

    checkpoint: str
    agent: str
    """the agent's label in tables and figures"""
    game: str
    kinds: list[str]
    explanations: list[str]
    """the explanations scored, in `EXPLANATIONS` order"""
    rgb: list[np.ndarray] = dataclasses.field(default_factory=list)
    """(210, 160, 3) rendered frames"""
    obs: list[np.ndarray] = dataclasses.field(default_factory=list)
    """(4, 84, 84) uint8 observations"""
    maps: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    """(84, 84) maps per name of `map_names(explanations)`"""
    masks: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    """(84, 84) bool masks per object class and `all`"""
    boxes: list[list[tuple[str, Box]]] = dataclasses.field(default_factory=list)
    """(kind, box) on the 210x160 screen"""


def randomised_copy(loaded):
    """The same architecture as `loaded`, freshly initialised by the script's own `make_agent` (seed: the run's + 1,
    so not the trained agent's own initial weights either)."""
    torch.manual_seed(loaded.args.seed + 1)
    agent = loaded.script.make_agent(loaded.args, loaded.agent.actor.out_features)
    agent.to(next(loaded.agent.parameters()).device).eval()
    return dataclasses.replace(loaded, agent=agent)


def record(
    checkpoint: str, loaded, randomised, game: str, frames: int, seed: int, explanations: list[str], stride: int
) -> Recording:
    """Play `frames` steps of `game` with the agent; at each step the maps `explanations` of the agent and of its
    randomised copy (a recurrent copy at its own state), all of the same observation and for the action the agent
    takes there, the baselines and the objects."""
    from attention_utils.checkpoints import PlayedGame, input_saliency, is_recurrent, policy_and_value
    from attention_utils.gradcam import class_activation_maps
    from attention_utils.perturbation import perturbation_saliency

    agent, recurrent = loaded.agent, is_recurrent(loaded.agent)
    networks = {"": loaded, "_randomised": randomised}
    own_maps = {suffix: input_saliency(net) for suffix, net in networks.items()} if "attention" in explanations else {}
    gradcam = "gradcam" in explanations or "gradcam++" in explanations
    # a recurrent copy gets a memory of its own, told the same actions, rewards and episode ends by PlayedGame;
    # the scripts' initial states are zeros, so a memory built for the trained agent serves its copy
    played = PlayedGame(dataclasses.replace(loaded, game=game), seed, copies=2 if recurrent else 1)
    recorder = RamRecorder(played.env.ale)
    played.env.ale = recorder
    played.start()  # again, so that every emulator frame of the game goes through the recorder
    label = f"{loaded.variant}, step {loaded.global_step:,}"
    rec = Recording(os.path.abspath(checkpoint), label, game, LAYOUTS[layout_name(game)].kinds, list(explanations))
    rec.maps = {name: [] for name in map_names(rec.explanations)}
    for _ in range(frames):
        obs = played.obs  # (4, 84, 84) uint8
        memories = dict(zip(networks, played.memories if recurrent else (None, None)))
        # everything that reads a recurrent state reads it now, before the agent acts and its memory moves on
        maps = {}
        for suffix, net in networks.items():
            memory = memories[suffix]
            if "attention" in explanations:
                maps["attention" + suffix] = own_maps[suffix](obs[None], memory.state if recurrent else None)[0]
            if "perturbation" in explanations:
                maps["perturbation" + suffix] = perturbation_saliency(
                    policy_and_value(net.agent, memory), obs, stride, policy="probs"
                )[0]
        scores = {suffix: policy_and_value(net.agent, memories[suffix], grad=True) for suffix, net in networks.items()}
        with torch.no_grad():
            if recurrent:
                action = memories[""].act(agent, obs[None])
                memories["_randomised"].act(randomised.agent, obs[None])  # only its state advances
            else:
                action, _, _, _ = agent.get_action_and_value(obs[None])
        if gradcam:  # of the action the agent took, for both networks
            for suffix, net in networks.items():
                for method, value in class_activation_maps(net, scores[suffix], obs[None], action).items():
                    maps[method + suffix] = value[0]
        for name, value in maps.items():
            if name.removesuffix("_randomised") in explanations:
                rec.maps[name].append(value.detach().float().cpu().numpy())
        for name, value in baseline_maps(obs).items():
            rec.maps[name].append(value)
        boxes = observation_boxes(game, list(recorder.rams))
        rec.boxes.append(boxes)
        rec.masks.append(grid_masks(boxes, rec.kinds))
        rec.obs.append(obs.numpy())
        rec.rgb.append(played.rgb())
        played.step(int(action))
    played.close()
    return rec


def score(rec: Recording, negatives: int, seed: int) -> list[dict]:
    """One row per frame, map and object class (`all` included): NSS, mass and area share, shuffled AUC; the rows
    of each trained map also carry the rank correlation between it and its randomised copy's. The shuffled AUC's
    negatives are the same `negatives` other frames for every map of a frame."""
    rng = np.random.default_rng(seed)
    frames = len(rec.masks)
    rows = []
    for t in range(frames):
        others = rng.choice(np.delete(np.arange(frames), t), size=min(negatives, frames - 1), replace=False)
        correlations = {e: rank_correlation(rec.maps[e][t], rec.maps[f"{e}_randomised"][t]) for e in rec.explanations}
        for kind in rec.kinds + ["all"]:
            mask = rec.masks[t][kind]
            other_pixels = np.sum([rec.masks[i][kind] for i in others], axis=0)  # (84, 84) counts
            area = float(mask.mean())
            for name in map_names(rec.explanations):
                saliency = rec.maps[name][t]
                rows.append(
                    {
                        "checkpoint": rec.checkpoint,
                        "agent": rec.agent,
                        "game": rec.game,
                        "frame": t,
                        "map": name,
                        "object_class": kind,
                        "nss": nss(saliency, mask),
                        "mass_share": mass_share(saliency, mask) if mask.any() else None,
                        "area_share": area if mask.any() else None,
                        "sauc": shuffled_auc(saliency, mask, other_pixels),
                        "rank_corr_trained_randomised": correlations.get(name),
                    }
                )
    return rows


METRICS = (("nss", "NSS"), ("mass_share", "mass share"), ("sauc", "shuffled AUC"))


def summarise(rows: list[dict]) -> dict:
    """Means over frames (undefined values dropped): {(map, class, metric): mean}, the area share per class and
    {("rank_corr", map): the mean rank correlation} per trained map."""
    means, values = {}, {}
    for row in rows:
        for metric, _ in METRICS + (("area_share", ""),):
            values.setdefault((row["map"], row["object_class"], metric), []).append(row[metric])
    for key, column in values.items():
        means[key] = mean_defined(column)
    per_frame = {}
    for row in rows:
        if row["map"] in EXPLANATIONS:
            per_frame.setdefault(row["map"], {})[row["frame"]] = row["rank_corr_trained_randomised"]
    for name, values in per_frame.items():
        means["rank_corr", name] = mean_defined(list(values.values()))
    return means


def _cell(value: Optional[float], metric: str) -> str:
    if value is None:
        return "undefined"
    return f"{100 * value:.2f}%" if metric == "mass_share" else f"{value:.3f}"


def markdown(game: str, recordings: list[Recording], summaries: list[dict], frames: int, negatives: int) -> str:
    """The game's tables: per agent and metric, a row per map (each explanation, then its randomised copy's, then
    the baselines) and a column per object class; then the rank correlation of each trained map with its copy's."""
    kinds = recordings[0].kinds + ["all"]
    lines = [
        f"## {game}",
        "",
        f"{frames} frames per agent. Object classes: {', '.join(kinds[:-1])} (`all`: every object). Rows: each of the "
        "agent's maps, the same map of the same architecture with randomised weights below it, then the maps that "
        "know nothing about the agent.",
        "",
    ]
    for rec, means in zip(recordings, summaries):
        lines += [f"### {rec.agent}", ""]
        for metric, metric_name in METRICS:
            header = [
                f"{kind} (boxes: {_cell(means.get(('intensity', kind, 'area_share')), metric)})"
                if metric == "mass_share"
                else kind
                for kind in kinds
            ]
            lines += [f"| {metric_name} | " + " | ".join(header) + " |", "|---" * (1 + len(kinds)) + "|"]
            for name in map_names(rec.explanations):
                cells = [_cell(means.get((name, kind, metric)), metric) for kind in kinds]
                lines.append(f"| {map_title(name)} | " + " | ".join(cells) + " |")
            lines.append("")
        correlations = ", ".join(
            f"{MAP_NAMES[name]} {_cell(means.get(('rank_corr', name)), 'rank')}" for name in rec.explanations
        )
        lines += [f"Rank correlation of each map with its randomised copy's (Spearman, mean over frames): {correlations}.", ""]
    lines += [
        "Means over frames; a frame where a metric is undefined (no object of the class on screen, a constant map) "
        f"is left out of that mean. Mass share: the share of the map inside the class's boxes; a uniform map gets "
        f"the boxes' share of the screen (in the header). Shuffled AUC: negatives are the object pixels of {negatives} "
        "other frames of the same game, so a map that is the same on every frame (the centre prior) scores 0.5.",
        "",
    ]
    return "\n".join(lines)


KIND_COLOURS = ["#ff3030", "#30ff30", "#30a0ff", "#ffff30", "#ff30ff", "#30ffff"]


def figure(path: str, recordings: list[Recording], frames_per_agent: int) -> None:
    """Rows: a few frames of each agent; columns: the rendered frame, then the agent's map, its randomised copy's
    and the frame difference over the observation's last frame, object boxes drawn on all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    explanations = [e for e in EXPLANATIONS if any(e in rec.explanations for rec in recordings)]
    columns = (
        [("frame", None)]
        + [(MAP_NAMES[e], e) for e in explanations]
        + [("randomised weights", "randomised"), ("frame difference", "motion")]
    )
    picks = []
    for rec in recordings:
        with_objects = [t for t, boxes in enumerate(rec.boxes) if boxes] or list(range(len(rec.boxes)))
        count = min(frames_per_agent, len(with_objects))
        picks += [(rec, with_objects[int(i)]) for i in np.linspace(0, len(with_objects) - 1, count + 2)[1:-1].round()]
    fig, axes = plt.subplots(len(picks), len(columns), figsize=(2.3 * len(columns), 2.6 * len(picks)), squeeze=False)
    for row, (rec, t) in enumerate(picks):
        colours = {kind: KIND_COLOURS[i % len(KIND_COLOURS)] for i, kind in enumerate(rec.kinds)}
        for col, (title, name) in enumerate(columns):
            ax = axes[row, col]
            if name == "randomised":  # the copy of the agent's first map
                name = f"{rec.explanations[0]}_randomised"
                title = f"{MAP_NAMES[rec.explanations[0]]},\nrandomised weights"
            if name is not None and name not in rec.maps:  # a map this agent does not have
                ax.axis("off")
                continue
            if name is None:  # the rendered frame, boxes in screen pixels
                ax.imshow(rec.rgb[t])
                scale = (1.0, 1.0)
            else:
                heat = rec.maps[name][t]
                heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)
                ax.imshow(rec.obs[t][-1], cmap="gray", vmin=0, vmax=255)
                ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
                scale = (GRID / SCREEN[0], GRID / SCREEN[1])
            for kind, (top, left, bottom, right) in rec.boxes[t]:
                ax.add_patch(
                    Rectangle(
                        (left * scale[1] - 0.5, top * scale[0] - 0.5),
                        (right - left) * scale[1],
                        (bottom - top) * scale[0],
                        fill=False,
                        edgecolor=colours[kind],
                        linewidth=1,
                    )
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{rec.agent}\nframe {t}", fontsize=7)
            ax.set_title(title, fontsize=8)
    handles = [
        Rectangle((0, 0), 1, 1, fill=False, edgecolor=KIND_COLOURS[i % len(KIND_COLOURS)], label=kind)
        for i, kind in enumerate(recordings[0].kinds)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"maps and objects: {recordings[0].game}", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    save_figure(fig, path, dpi=80)
    plt.close(fig)


def check_inputs(args: Args) -> list[tuple[str, object, str]]:
    """Everything that can be refused before any play, one line each: bad counts, an unknown map, a missing or
    unloadable checkpoint, a game without a RAM layout, an agent without a map asked for, a `--game` with another
    number of actions. Returns (checkpoint, loaded agent, game, the maps to score) per agent."""
    from attention_utils.checkpoints import load_agent, num_actions_of, require_grey_frames

    unknown = [name for name in args.maps if name not in EXPLANATIONS]
    if unknown:
        sys.exit(f"error: --maps {' '.join(unknown)}: unknown; valid: {', '.join(EXPLANATIONS)}")
    check_at_least("--frames", args.frames, 2)  # the shuffled AUC needs other frames
    check_at_least("--perturbation-stride", args.perturbation_stride)
    check_at_least("--negatives", args.negatives)
    check_at_least("--figure-frames", args.figure_frames)
    check_at_least("--threads", args.threads, 0)
    check_checkpoints(args.checkpoint, args.out)
    agents = []
    for checkpoint in args.checkpoint:
        loaded = load_agent(checkpoint)  # one line and exit for a file that does not load
        require_grey_frames(loaded, "objects (its baselines read the grey frames)")
        game = loaded.script.parse_game(args.game) if args.game else loaded.game
        if layout_name(game) is None:
            sys.exit(f"error: no RAM layout for {game}; games with one: {', '.join(sorted(LAYOUTS))}")
        has = available_maps(loaded)
        missing = [name for name in args.maps if name not in has]
        if missing:
            sys.exit(f"error: {checkpoint}: {loaded.variant} has no {' or '.join(missing)} map; it has: {', '.join(has)}")
        actions = loaded.agent.actor.out_features
        if game != loaded.game and num_actions_of(game) != actions:
            sys.exit(
                f"error: --game {game} has {num_actions_of(game)} actions, {checkpoint} ({loaded.game}) has {actions}; "
                "give a game with the agent's number of actions"
            )
        agents.append((checkpoint, loaded, game, [name for name in EXPLANATIONS if name in (args.maps or has)]))
    return agents


def main(args: Args) -> list[str]:
    """Score every agent; returns the paths written (without extension), one per game."""
    torch.set_num_threads(args.threads or available_cores())
    agents = check_inputs(args)
    out = args.out or os.path.join(beside_checkpoint(args.checkpoint[0]), "objects")
    by_game: dict[str, list[tuple[Recording, list[dict], dict]]] = {}
    for checkpoint, loaded, game, explanations in agents:
        rec = record(
            checkpoint, loaded, randomised_copy(loaded), game, args.frames, args.seed, explanations, args.perturbation_stride
        )
        rows = score(rec, args.negatives, args.seed)
        means = summarise(rows)
        by_game.setdefault(game, []).append((rec, rows, means))
        scores = ", ".join(
            f"{MAP_NAMES[name]} {_cell(means.get((name, 'all', 'nss')), 'nss')} "
            f"(randomised {_cell(means.get((name + '_randomised', 'all', 'nss')), 'nss')})"
            for name in explanations
        )
        baselines = ", ".join(f"{name} {_cell(means.get((name, 'all', 'nss')), 'nss')}" for name in BASELINES)
        print(f"{game} {rec.agent}: NSS on all objects: {scores}; baselines: {baselines}", flush=True)
    os.makedirs(out, exist_ok=True)
    written = []
    for game, results in by_game.items():
        stem = free_path(os.path.join(out, f"{game}_objects"), (".csv", ".md", ".png"))  # earlier results are kept
        recordings = [rec for rec, _, _ in results]
        with atomic_open(f"{stem}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(results[0][1][0]))
            writer.writeheader()
            for _, rows, _ in results:
                writer.writerows(rows)
        write_text(f"{stem}.md", markdown(game, recordings, [means for _, _, means in results], args.frames, args.negatives))
        figure(f"{stem}.png", recordings, args.figure_frames)
        print(f"{game}: {stem}.md, {stem}.csv, {stem}.png")
        written.append(stem)
    return written


if __name__ == "__main__":
    main(tyro.cli(Args))
