"""Time of one PPO minibatch (forward, backward, Adam step) per variant and precision.

python benchmarks/minibatch.py
"""

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_atari_selfattn as selfattn  # noqa: E402


@dataclass
class Args:
    variants: tuple[str, ...] = ("NA", "SWA", "CWRA", "CWCA", "CWRCA")
    """variants to time"""
    minibatch_size: int = 256
    """samples per minibatch"""
    repeats: int = 20
    """timed minibatches (after 3 warm-up ones)"""


def minibatch_ms(variant, precision, args):
    agent = selfattn.Agent(4, variant)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    obs = torch.randint(0, 256, (args.minibatch_size, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 4, (args.minibatch_size,))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

    def step():
        with autocast():
            _, logprob, entropy, value = agent.get_action_and_value(obs, actions)
        loss = -logprob.mean() - 0.01 * entropy.mean() + value.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.repeats):
        step()
    return (time.perf_counter() - start) / args.repeats * 1000


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print("| variant | fp32 ms | bf16 autocast ms |")
    print("|---|---|---|")
    for variant in args.variants:
        print(
            f"| {variant} | {minibatch_ms(variant, 'fp32', args):.1f} | {minibatch_ms(variant, 'bf16', args):.1f} |",
            flush=True,
        )
