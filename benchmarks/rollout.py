"""Rollout throughput (acting + env stepping, no update) for thread and grouping settings.

    python benchmarks/rollout.py --variant NA

Mirrors the training loop's rollout: envs split into `groups` envpool pools stepped alternately
(send/recv), bf16 autocast policy, `torch_threads` intra-op threads while acting.
"""

import os
import sys
import time
from dataclasses import dataclass

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_atari_selfattn as selfattn  # noqa: E402


@dataclass
class Args:
    variant: str = "NA"
    """self-attention variant of the policy"""
    game: str = "Breakout"
    """the Atari game"""
    num_envs: int = 16
    """environments in all"""
    num_steps: int = 128
    """steps per environment (one rollout)"""
    repeats: int = 3
    """rollouts per setting (the best is reported)"""


def rollout_sps(agent, args, groups, env_threads, torch_threads):
    torch.set_num_threads(torch_threads)
    size = args.num_envs // groups
    pools = [selfattn.make_env(args.game, size, 1 + g * size, True, env_threads) for g in range(groups)]
    obs = [torch.from_numpy(pool.reset()[0]) for pool in pools]
    best = 0.0
    for _ in range(args.repeats):
        in_flight = [False] * groups
        start = time.perf_counter()
        for _ in range(args.num_steps):
            for g, pool in enumerate(pools):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    action, _, _, _ = agent.get_action_and_value(obs[g])
                pool.send(action.numpy())
                in_flight[g] = True
                if in_flight[g - 1]:
                    obs[g - 1] = torch.from_numpy(pools[g - 1].recv()[0])
                    in_flight[g - 1] = False
        for g in range(groups):
            if in_flight[g]:
                obs[g] = torch.from_numpy(pools[g].recv()[0])
        best = max(best, args.num_envs * args.num_steps / (time.perf_counter() - start))
    for pool in pools:
        pool.close()
    return best


if __name__ == "__main__":
    args = tyro.cli(Args)
    cores = len(os.sched_getaffinity(0))
    agent = selfattn.Agent(4, args.variant)
    print("| variant | env pools | envpool threads per pool | torch threads while acting | rollout steps/s |")
    print("|---|---|---|---|---|")
    for groups, env_threads, torch_threads in [
        (1, cores, cores),
        (1, cores, 1),
        (2, max(1, cores // 2), cores),
        (2, max(1, cores // 2), 1),
        (2, cores, 1),
        (2, cores, cores),
    ]:
        sps = rollout_sps(agent, args, groups, env_threads, torch_threads)
        print(f"| {args.variant} | {groups} | {env_threads} | {torch_threads} | {sps:,.0f} |", flush=True)
