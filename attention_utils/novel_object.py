"""Novel-object injection (Mott et al., "Towards Interpretable Reinforcement Learning Using Attention Augmented
Agents", section 4.2): paste an object the agent has never seen into its observations and record how its
attention and its action distribution respond.

The object (`--sprite`):
- `fish` (default, as section 4.2 and Fig. 3): a small fish (5x8 pixels of the 84x84 observation, drawn
  here, `--fish-scale` to enlarge it) that enters from the left edge at `--inject-step` (0: the episode's
  first step, "at the beginning of the episode") and swims right at `--speed` columns per agent step,
  bobbing by `--amplitude` pixels every `--period` steps. Each of the 4 stacked frames shows it where it was
  at that frame's step, so the agent sees it move; it is spliced into the pixels only, not into the game,
  so nothing in the game reacts to it.
- `checkerboard`: a static `--size` x `--size` checkerboard at (`--row`, `--col`) in all 4 stacked frames
  from `--inject-step` on.

At every step of one evaluation episode the agent sees the observation with the object and acts on it;
the same observation without the object is also evaluated, so the change it causes is measured step by step:
- `attention_on_sprite`: the share of the agent's (normalised) 84x84 attention inside the object's box in
  the newest frame (clipped to the screen; empty while the fish is off screen), with and without the
  object, next to `uniform_share`, the box's share of the screen;
- `policy_kl`: KL(pi(with object) || pi(without)) of the action distributions;
- `state_change` (recurrent agents, else empty): the largest absolute difference between the two states.
A recurrent agent (ppo_atari_topdown.py) remembers the object, so its counterfactual is a copy that carries
its own state: it sees the same frames without the object and is told the same previous actions (the
game follows the agent that sees the object), rewards and episode ends; the attention is each copy's
heads' maps at its own state, summed over heads and brought to 84x84 by the script's `upsample_to_input`.
Writes `{out}.csv` (one row per step) and `{out}.png`: three observations with the object and the
attention drawn on them, and the attention share and the policy's KL over the steps.

    python -m attention_utils.novel_object --checkpoint runs/.../step_000500000.cleanrl_model
"""

import csv
import math
import os
import sys
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import tyro

from attention_utils.cli_checks import beside_checkpoint, check_at_least, check_checkpoint_exists, check_output_file, free_path
from attention_utils.runs import atomic_open, save_figure

SCREEN = 84
# the fish, facing right (it swims rightwards): T tail and fins, B body, E eye, . transparent
FISH_ROWS = (
    "T...BBB.",
    "TT.BBBBB",
    ".TTBBBEB",
    "TT.BBBBB",
    "T...BBB.",
)
FISH_GREY = {"T": 140, "B": 200, "E": 40}


def fish_sprite(scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The fish as (grey levels (5 s, 8 s) uint8, mask (5 s, 8 s) bool), each drawn pixel a `scale` x `scale` block."""
    grey = torch.tensor([[FISH_GREY.get(c, 0) for c in row] for row in FISH_ROWS], dtype=torch.uint8)  # (5, 8)
    mask = torch.tensor([[c != "." for c in row] for row in FISH_ROWS])
    return grey.repeat_interleave(scale, 0).repeat_interleave(scale, 1), mask.repeat_interleave(scale, 0).repeat_interleave(
        scale, 1
    )


def checkerboard_sprite(size: int, value: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """A `size` x `size` checkerboard (a pattern no Atari game draws at one place) and its mask (all drawn)."""
    grey = torch.zeros(size, size, dtype=torch.uint8)
    grey[::2, ::2] = value
    grey[1::2, 1::2] = value
    return grey, torch.ones(size, size, dtype=torch.bool)


def clipped_box(row: int, col: int, height: int, width: int) -> Optional[tuple[slice, slice]]:
    """The part of a sprite at (row, col) that lies on the 84x84 screen, as screen slices; None if none does."""
    top, left, bottom, right = max(row, 0), max(col, 0), min(row + height, SCREEN), min(col + width, SCREEN)
    return (slice(top, bottom), slice(left, right)) if top < bottom and left < right else None


def paste(
    obs: torch.Tensor, sprite: tuple[torch.Tensor, torch.Tensor], positions: list[Optional[tuple[int, int]]]
) -> torch.Tensor:
    """A copy of (4, 84, 84) uint8 with the sprite's drawn pixels at `positions[k]` (top-left corner, may be off
    screen: clipped) in stacked frame k (None: not in that frame)."""
    grey, mask = sprite
    height, width = grey.shape
    out = obs.clone()
    for frame, position in zip(out, positions):
        if position is None:
            continue
        row, col = position
        box = clipped_box(row, col, height, width)
        if box is None:
            continue
        inside = (slice(box[0].start - row, box[0].stop - row), slice(box[1].start - col, box[1].stop - col))
        frame[box] = torch.where(mask[inside], grey[inside], frame[box])
    return out


@dataclass
class Args:
    checkpoint: str
    """a `.cleanrl_model` file written by any training script"""
    sprite: Literal["fish", "checkerboard"] = "fish"
    """"fish": a fish swimming in from the left (section 4.2); "checkerboard": a static checkerboard"""
    inject_step: int = 0
    """the first agent step whose observation carries the object (0: the episode's first step)"""
    steps: int = 150
    """length of the recorded stretch (the episode restarts if it ends)"""
    row: int = 30
    """the object's top row in the 84x84 observation (the fish's at --inject-step)"""
    col: Optional[int] = None
    """the object's left column (the fish's at --inject-step); default: the fish just off the left edge, only its
    nose on screen (1 - its width), the checkerboard at 30"""
    speed: float = 1.0
    """fish: columns per agent step (negative: leftwards)"""
    amplitude: float = 0.0
    """fish: rows it bobs up and down (0: a straight path)"""
    period: float = 40.0
    """fish: agent steps of one bob"""
    fish_scale: int = 1
    """fish: drawn at this integer scale (5x8 pixels at 1)"""
    size: int = 8
    """checkerboard: its side, pixels of the 84x84 observation"""
    seed: int = 7_000_000
    """seed of the episode"""
    out: Optional[str] = None
    """output path without extension (default: `novel_object_step_*` beside the checkpoint); existing files are kept
    (`-2`, ...)"""


def sprite_of(args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    return fish_sprite(args.fish_scale) if args.sprite == "fish" else checkerboard_sprite(args.size)


def start_column(args: Args) -> int:
    if args.col is not None:
        return args.col
    return 1 - sprite_of(args)[0].shape[1] if args.sprite == "fish" else 30


def position_at(args: Args, step: int) -> Optional[tuple[int, int]]:
    """The object's top-left corner at agent step `step` (None before --inject-step)."""
    if step < args.inject_step:
        return None
    if args.sprite == "checkerboard":
        return args.row, start_column(args)
    elapsed = step - args.inject_step
    bob = args.amplitude * math.sin(2 * math.pi * elapsed / args.period)
    return args.row + round(bob), start_column(args) + round(args.speed * elapsed)


def stacked_positions(args: Args, step: int) -> list[Optional[tuple[int, int]]]:
    """The object's position in each of the 4 stacked frames of the observation of agent step `step`: frame k
    was rendered at step `step` - 3 + k, and the fish is drawn where it was then; the checkerboard is in
    all 4 frames from --inject-step on."""
    if args.sprite == "checkerboard":
        return [position_at(args, step)] * 4
    return [position_at(args, step - 3 + k) for k in range(4)]


def check_args(args: Args) -> None:
    """Everything that can be checked before the checkpoint is loaded."""
    check_at_least("--steps", args.steps)
    if not 0 <= args.inject_step < args.steps:
        sys.exit(
            f"error: --inject-step {args.inject_step} must be inside the recorded stretch (0 .. --steps {args.steps} - 1)"
        )
    check_at_least("--size", args.size)
    check_at_least("--fish-scale", args.fish_scale)
    if not args.period > 0:
        sys.exit(f"error: --period {args.period}: must be positive")
    height, width = sprite_of(args)[0].shape
    if args.sprite == "checkerboard":
        col = start_column(args)
        if not (0 <= args.row <= SCREEN - height and 0 <= col <= SCREEN - width):
            sys.exit(
                f"error: the sprite ({height}x{width} at row {args.row}, column {col}) must lie inside the 84x84 observation"
            )
    elif not any(clipped_box(*position_at(args, step), height, width) for step in range(args.inject_step, args.steps)):
        sys.exit(
            f"error: the fish (from row {args.row}, column {start_column(args)}, {args.speed:g} columns per step) never "
            f"enters the 84x84 observation in steps {args.inject_step} .. {args.steps - 1}; change --row, --col or --speed"
        )
    check_checkpoint_exists(args.checkpoint)
    if args.out is not None:
        check_output_file(args.out)


@torch.no_grad()
def main(args: Args) -> str:
    check_args(args)  # before the slow imports
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attention_utils.checkpoints import (
        PlayedGame,
        input_saliency,
        is_recurrent,
        load_agent,
        policy_and_value,
        require_grey_frames,
    )

    loaded = load_agent(args.checkpoint)
    require_grey_frames(loaded, "novel_object (the sprite is drawn into grey frames)")
    agent = loaded.agent
    recurrent = is_recurrent(agent)
    saliency_fn = input_saliency(loaded)
    if saliency_fn is None:
        print(
            f"note: {loaded.variant} has no spatial attention map; "
            "only the policy's response (and the state's, for a recurrent agent) is recorded"
        )
    sprite = sprite_of(args)
    height, width = sprite[0].shape
    # row 0: what the agent sees (with the object once injected); row 1: the same frame without it. Each row
    # goes through the network on its own, so the two are bit-for-bit equal until the object appears.
    game = PlayedGame(loaded, args.seed, copies=2)
    rows, observations, attention = [], [], []
    for step in range(args.steps):
        injected = step >= args.inject_step
        obs = game.obs
        seen = paste(obs, sprite, stacked_positions(args, step))
        pair = torch.stack([seen, obs])  # (2, 4, 84, 84)
        logits = torch.cat([policy_and_value(agent, memory)(x[None])[0] for x, memory in zip(pair, game.memories)])  # (2, A)
        log_probs = torch.log_softmax(logits.double(), -1)  # fp64: an untrained agent's KL can be ~1e-8
        probs = log_probs.exp()
        kl = max(float((probs[0] * (log_probs[0] - log_probs[1])).sum()), 0.0)  # rounding can dip ~1e-17 below 0
        position = position_at(args, step)
        box = None if position is None else clipped_box(*position, height, width)  # the object in the newest frame
        maps, share_with, share_without = None, float("nan"), float("nan")
        if saliency_fn is not None:
            maps = torch.cat(
                [saliency_fn(x[None], None if memory is None else memory.state) for x, memory in zip(pair, game.memories)]
            )
            maps = maps.float().clamp(min=0)  # (2, 84, 84)
            if box is not None:
                share_with, share_without = (maps[:, box[0], box[1]].sum((1, 2)) / maps.sum((1, 2)).clamp(min=1e-12)).tolist()
        state_change = (
            max(float((a - b).abs().max()) for a, b in zip(game.memories[0].state, game.memories[1].state))
            if recurrent
            else ""
        )
        box_area = 0 if box is None else (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        rows.append(
            {
                "step": step,
                "injected": int(injected),
                "sprite_row": "" if position is None else position[0],
                "sprite_col": "" if position is None else position[1],
                "visible_pixels": int((seen[-1] != obs[-1]).sum()),
                "attention_on_sprite": share_with,
                "attention_on_sprite_without": share_without,
                "uniform_share": box_area / SCREEN**2 if injected else float("nan"),
                "policy_kl": kl,
                "state_change": state_change,
                "action_probs": ";".join(f"{p:.4f}" for p in probs[0].tolist()),
            }
        )
        observations.append(seen[-1])
        attention.append(None if maps is None else maps[0])
        if recurrent:  # both copies' states advance; the game follows the agent that sees the object
            action = game.memories[0].act(agent, seen[None])
            game.memories[1].act(agent, obs[None])
        else:
            action = torch.multinomial(probs[0], 1)
        game.step(int(action))
    game.close()

    out = free_path(
        args.out or os.path.join(beside_checkpoint(args.checkpoint), f"novel_object_step_{loaded.global_step:09d}"),
        (".csv", ".png"),
    )
    with atomic_open(f"{out}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # three observations: before the injection when there is one, then spread over the steps the object is on screen
    on_screen = [r["step"] for r in rows if r["injected"] and r["uniform_share"] > 0]  # never empty (check_args)
    spread_over = [on_screen[round(q * (len(on_screen) - 1))] for q in (0.15, 0.5, 0.85)]
    shown = sorted(set(([args.inject_step - 1] + spread_over[1:]) if args.inject_step > 0 else spread_over))
    fig = plt.figure(figsize=(10, 7))
    grid = fig.add_gridspec(2, 6)  # top: up to 3 observations, 2 columns each; bottom: 2 plots, 3 columns each
    for i, step in enumerate(shown):
        ax = fig.add_subplot(grid[0, 2 * i : 2 * i + 2])
        ax.imshow(observations[step].numpy(), cmap="gray", vmin=0, vmax=255)
        if attention[step] is not None:
            ax.imshow(attention[step].numpy(), cmap="jet", alpha=0.35)
        position = position_at(args, step)
        if position is not None:
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (position[1] - 0.5, position[0] - 0.5), width, height, fill=False, color="white", linewidth=0.8
                )
            )
        ax.set_xlim(-0.5, SCREEN - 0.5)
        ax.set_ylim(SCREEN - 0.5, -0.5)
        ax.set_title(f"step {step} ({'with the' if step >= args.inject_step else 'before the'} {args.sprite})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    steps = [r["step"] for r in rows]
    ax = fig.add_subplot(grid[1, :3])
    ax.plot(steps, [r["attention_on_sprite"] for r in rows], label=f"with the {args.sprite}")
    ax.plot(steps, [r["attention_on_sprite_without"] for r in rows], label="same frames without it")
    ax.plot(steps, [r["uniform_share"] for r in rows], color="gray", linestyle=":", label="uniform share (box area)")
    ax.set_title(
        f"attention share inside the {args.sprite}'s box"
        + (" (this agent has no spatial map)" if saliency_fn is None else ""),
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 3:])
    ax.plot(steps, [r["policy_kl"] for r in rows])
    ax.set_title(f"KL(pi with the {args.sprite} || pi without)", fontsize=9)
    for ax in fig.axes[-2:]:
        ax.axvline(args.inject_step, color="red", linestyle="--")
        ax.set_xlim(0, args.steps - 1)
        ax.set_xlabel("agent step")
    fig.suptitle(f"novel object: {loaded.variant} on {loaded.game}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, f"{out}.png", dpi=80)
    plt.close(fig)
    visible = [r for r in rows if r["injected"] and r["uniform_share"] > 0]
    shares = (
        ""
        if saliency_fn is None
        else (
            f"attention share on the {args.sprite} {np.mean([r['attention_on_sprite'] for r in visible]):.3f} with, "
            f"{np.mean([r['attention_on_sprite_without'] for r in visible]):.3f} without, "
            f"{np.mean([r['uniform_share'] for r in visible]):.3f} uniform over the {len(visible)} steps it is on screen; "
        )
    )
    print(
        f"{loaded.variant} on {loaded.game}: {shares}"
        f"mean policy KL {np.mean([r['policy_kl'] for r in rows if r['injected']]):.4g}; {out}.png, {out}.csv"
    )
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
