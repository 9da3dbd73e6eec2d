"""Time of one PPO minibatch of a recurrent agent (replay of whole sequences, backward, Adam step) and of one rollout
policy step, at the script's default sizes, per precision and with or without `--compile`'s per-step cell.

    python benchmarks/recurrent_update.py                                    # top-down agent, bf16
    python benchmarks/recurrent_update.py --script ppo_atari_temporal.py --agent-args arch=spatiotemporal
    python benchmarks/recurrent_update.py --repo /tmp/older-checkout         # the same on another checkout
    python benchmarks/recurrent_update.py --profile 12                       # + the minibatch's 12 costliest operators

`--repo` imports the scripts of another checkout (e.g. `git worktree add /tmp/older-checkout HEAD~5`), so a change
is measured against the code before it in one session on one machine.
"""

import importlib
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import tyro


@dataclass
class Args:
    script: str = "ppo_atari_topdown.py"
    """the recurrent training script"""
    agent_args: tuple[str, ...] = ()
    """`field=value` settings of the script's Args, e.g. arch=spatiotemporal"""
    repo: str = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    """the checkout whose script is imported"""
    precision: Literal["bf16", "fp32"] = "bf16"
    """bf16 autocast (as `--precision auto` on hardware with native bf16) or fp32"""
    compile: bool = False
    """compile the agent's per-step cell as the script's `--compile` does"""
    repeats: int = 5
    """timed minibatches (after 2 warm-up ones); the median is reported, steadier than the mean on a shared machine"""
    threads: int = 0
    """torch threads for the update; 0 = all cores (the rollout uses 1, as the scripts do)"""
    profile: int = 0
    """after the timing, profile one more minibatch and print its this many costliest operators (self CPU time)"""


def main(args: Args) -> None:
    sys.path.insert(0, args.repo)
    script = importlib.import_module(args.script.removesuffix(".py"))
    settings = script.Args()
    for setting in args.agent_args:
        name, value = setting.split("=", 1)
        setattr(settings, name.replace("-", "_"), value)
    torch.manual_seed(0)
    agent = script.make_agent(settings, 4)
    if args.compile:
        agent.compile_core()
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    steps, envs = settings.num_steps, settings.num_envs // settings.num_minibatches
    channels = getattr(agent, "in_channels", 4)
    obs = torch.randint(0, 256, (steps * envs, channels, 84, 84), dtype=torch.uint8)  # (T * N, C, 84, 84), time-major
    actions, prev_actions = torch.randint(0, 4, (steps * envs,)), torch.randint(0, 5, (steps * envs,))
    prev_rewards, dones = torch.randn(steps * envs).sign(), (torch.rand(steps * envs) < 0.02).float()
    state = agent.initial_state(envs, "cpu")

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()

    def minibatch():
        with autocast():
            _, logprob, entropy, value, _ = agent.get_action_and_value(obs, state, prev_actions, prev_rewards, dones, actions)
        loss = -logprob.mean() - 0.01 * entropy.mean() + value.pow(2).mean() + agent.auxiliary_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    start = time.perf_counter()
    minibatch()
    first = time.perf_counter() - start
    minibatch()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        minibatch()
        times.append(time.perf_counter() - start)
    update = statistics.median(times)
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            minibatch()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))

    rollout_envs = settings.num_envs // 2  # the loop acts on one of its two env pools at a time
    step_obs = obs[:rollout_envs]
    step_state = agent.initial_state(rollout_envs, "cpu")
    zeros = torch.zeros(rollout_envs)
    torch.set_num_threads(1)

    def act(count):
        nonlocal step_state
        with torch.no_grad(), autocast():
            for _ in range(count):
                _, _, _, _, step_state = agent.get_action_and_value(step_obs, step_state, zeros.long(), zeros, zeros)

    act(3)
    blocks = []  # 5 blocks of 10 steps, the median block
    for _ in range(5):
        start = time.perf_counter()
        act(10)
        blocks.append((time.perf_counter() - start) / 10 * 1000)
    act_ms = statistics.median(blocks)
    iterations = settings.update_epochs * settings.num_minibatches
    print(
        f"{args.script} {' '.join(args.agent_args)} {args.precision}{' compiled' if args.compile else ''} ({args.repo}): "
        f"minibatch of {envs} envs x {steps} steps {update * 1000:,.0f} ms (first {first:,.1f} s), "
        f"x {iterations} = update {update * iterations:.1f} s per iteration; policy step ({rollout_envs} envs) "
        f"{act_ms:.1f} ms, x {2 * settings.num_steps} = {act_ms * 2 * settings.num_steps / 1000:.1f} s per rollout"
    )


if __name__ == "__main__":
    main(tyro.cli(Args))
