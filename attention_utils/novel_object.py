"""Novel-object injection (Mott et al., "Towards Interpretable Reinforcement Learning Using Attention Augmented
Agents", section 4.2): from a given step on, paste a sprite the agent has
never seen into its observations and record how its attention and its action distribution respond.

At every step of one evaluation episode the agent sees the observation with the sprite (from
`--inject-step` on) and acts on it; the same observation without the sprite is also evaluated, so the
change it causes is measured step by step:
- `attention_on_sprite`: the share of the agent's (normalised) 84x84 attention inside the sprite's box,
  with and without the sprite;
- `policy_kl`: KL(pi(with sprite) || pi(without)) of the action distributions;
- `state_change` (recurrent agents, else empty): the largest absolute difference between the two states.
A recurrent agent (ppo_atari_topdown.py) remembers the sprite, so its counterfactual is a copy that carries
its own state: it sees the same frames without the sprite and is told the same previous actions (the
game follows the agent that sees the sprite), rewards and episode ends; the attention is each copy's
heads' maps at its own state, summed over heads and brought to 84x84 by the script's `upsample_to_input`.
Writes `{out}.csv` (one row per step) and `{out}.png`: the observation just before and a few steps
after the injection with the attention drawn on it, and the two curves over the steps.

    python -m attention_utils.novel_object --checkpoint runs/.../step_000500000.cleanrl_model --inject-step 50
"""

import csv
import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

from attention_utils.checkpoints import PlayedGame, input_saliency, is_recurrent, load_agent, policy_and_value


def paste_sprite(obs: torch.Tensor, row: int, col: int, size: int, value: int = 255) -> torch.Tensor:
    """A copy of (4, 84, 84) uint8 with a `size` x `size` checkerboard sprite at (row, col) in every
    stacked frame (a pattern no Atari game draws at that place)."""
    sprite = torch.zeros(size, size, dtype=torch.uint8)
    sprite[::2, ::2] = value
    sprite[1::2, 1::2] = value
    out = obs.clone()
    out[:, row : row + size, col : col + size] = sprite
    return out


@dataclass
class Args:
    checkpoint: str
    """a `.cleanrl_model` file written by any training script"""
    inject_step: int = 50
    """the first agent step whose observation carries the sprite"""
    steps: int = 150
    """length of the recorded stretch (the episode restarts if it ends)"""
    row: int = 30
    """sprite's top row in the 84x84 observation"""
    col: int = 30
    """sprite's left column in the 84x84 observation"""
    size: int = 8
    """sprite's side, pixels of the 84x84 observation"""
    seed: int = 7_000_000
    """seed of the episode"""
    out: Optional[str] = None
    """output path without extension (default: `novel_object_step_*` beside the checkpoint)"""


@torch.no_grad()
def main(args: Args) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (0 <= args.row <= 84 - args.size and 0 <= args.col <= 84 - args.size and args.size >= 1):
        sys.exit(
            f"error: the sprite ({args.size}x{args.size} at row {args.row}, column {args.col}) "
            "must lie inside the 84x84 observation"
        )
    if not 0 < args.inject_step < args.steps:
        sys.exit(
            f"error: --inject-step {args.inject_step} must be inside the recorded stretch (1 .. --steps {args.steps} - 1)"
        )
    loaded = load_agent(args.checkpoint)
    agent = loaded.agent
    recurrent = is_recurrent(agent)
    saliency_fn = input_saliency(loaded)
    if saliency_fn is None:
        print(
            f"note: {loaded.variant} has no spatial attention map; "
            "only the policy's response (and the state's, for a recurrent agent) is recorded"
        )
    box = (slice(args.row, args.row + args.size), slice(args.col, args.col + args.size))
    # row 0: what the agent sees (with the sprite once injected); row 1: the same frame without it. Each row
    # goes through the network on its own, so the two are bit-for-bit equal until the sprite appears.
    game = PlayedGame(loaded, args.seed, copies=2)
    rows, shown = [], {}
    for step in range(args.steps):
        injected = step >= args.inject_step
        obs = game.obs
        seen = paste_sprite(obs, args.row, args.col, args.size) if injected else obs
        pair = torch.stack([seen, obs])  # (2, 4, 84, 84)
        logits = torch.cat([policy_and_value(agent, memory)(x[None])[0] for x, memory in zip(pair, game.memories)])  # (2, A)
        log_probs = torch.log_softmax(logits.double(), -1)  # fp64: an untrained agent's KL can be ~1e-8
        probs = log_probs.exp()
        kl = float((probs[0] * (log_probs[0] - log_probs[1])).sum())
        if saliency_fn is None:
            maps, share_with, share_without = None, float("nan"), float("nan")
        else:
            maps = torch.cat(
                [saliency_fn(x[None], None if memory is None else memory.state) for x, memory in zip(pair, game.memories)]
            )
            maps = maps.float().clamp(min=0)  # (2, 84, 84)
            share_with, share_without = (maps[:, box[0], box[1]].sum((1, 2)) / maps.sum((1, 2)).clamp(min=1e-12)).tolist()
        state_change = (
            max(float((a - b).abs().max()) for a, b in zip(game.memories[0].state, game.memories[1].state))
            if recurrent
            else ""
        )
        rows.append(
            {
                "step": step,
                "injected": int(injected),
                "attention_on_sprite": share_with,
                "attention_on_sprite_without": share_without,
                "policy_kl": kl,
                "state_change": state_change,
                "action_probs": ";".join(f"{p:.4f}" for p in probs[0].tolist()),
            }
        )
        if step in (args.inject_step - 1, min(args.inject_step + 5, args.steps - 1)):
            shown[step] = (seen, None if maps is None else maps[0])
        if recurrent:  # both copies' states advance; the game follows the agent that sees the sprite
            action = game.memories[0].act(agent, seen[None])
            game.memories[1].act(agent, obs[None])
        else:
            action = torch.multinomial(probs[0], 1)
        game.step(int(action))
    game.close()

    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(args.checkpoint)), f"novel_object_step_{loaded.global_step:09d}"
    )
    with open(f"{out}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig = plt.figure(figsize=(9, 6.5))
    for i, (step, (seen, attention)) in enumerate(sorted(shown.items())):
        ax = fig.add_subplot(2, 2, i + 1)
        ax.imshow(seen[-1].numpy(), cmap="gray")
        if attention is not None:
            ax.imshow(attention.numpy(), cmap="jet", alpha=0.45)
        ax.add_patch(
            matplotlib.patches.Rectangle((args.col - 0.5, args.row - 0.5), args.size, args.size, fill=False, color="white")
        )
        ax.set_title(f"step {step} ({'with' if step >= args.inject_step else 'before the'} sprite)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    steps = [r["step"] for r in rows]
    ax = fig.add_subplot(2, 2, 3)
    ax.plot(steps, [r["attention_on_sprite"] for r in rows], label="with the sprite")
    ax.plot(steps, [r["attention_on_sprite_without"] for r in rows], label="same frames without it")
    ax.axhline(args.size**2 / 84**2, color="gray", linestyle=":", label="uniform share")
    ax.set_title(
        "attention share inside the sprite's box" + (" (this agent has no spatial map)" if saliency_fn is None else ""),
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 2, 4)
    ax.plot(steps, [r["policy_kl"] for r in rows])
    ax.set_title("KL(pi with sprite || pi without)", fontsize=9)
    for ax in fig.axes[-2:]:
        ax.axvline(args.inject_step, color="red", linestyle="--")
        ax.set_xlabel("agent step")
    fig.suptitle(f"novel object: {loaded.variant} on {loaded.game}", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=80)
    plt.close(fig)
    after = [r for r in rows if r["injected"]]
    shares = (
        ""
        if saliency_fn is None
        else (
            f"attention share on the sprite {np.mean([r['attention_on_sprite'] for r in after]):.3f} with, "
            f"{np.mean([r['attention_on_sprite_without'] for r in after]):.3f} without; "
        )
    )
    print(
        f"{loaded.variant} on {loaded.game}: {shares}"
        f"mean policy KL {np.mean([r['policy_kl'] for r in after]):.4g}; {out}.png, {out}.csv"
    )
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
