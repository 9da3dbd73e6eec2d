"""Shared helpers for the tests of ppo_atari_selfattn.py.

Every training test drives the real entry point in a subprocess (`python ppo_atari_selfattn.py ...`) with
its working directory in a pytest tmp folder, so `runs/` is created there and never in the repository.
"""

import csv
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "ppo_atari_selfattn.py"
VARIANTS = ["NA", "SWA", "CWRA", "CWCA", "CWRCA"]

# A tiny configuration: one batch is NUM_ENVS x NUM_STEPS = 32 agent steps. Breakout keeps the
# evaluation episodes of an untrained policy short (Pong's last thousands of steps).
# --torch-threads 1 / --env-threads 1: the machine that runs the suite is small and shared; with torch
# using all cores next to envpool's threads, batch-1 evaluation steps can get ~100x slower.
NUM_ENVS, NUM_STEPS = 2, 16
BATCH = NUM_ENVS * NUM_STEPS
TINY = [
    "--env-id",
    "Breakout",
    "--num-envs",
    str(NUM_ENVS),
    "--num-steps",
    str(NUM_STEPS),
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--eval-episodes",
    "2",
    "--eval-freq",
    str(BATCH),
    "--save-freq",
    str(BATCH),
    "--torch-threads",
    "1",
    "--env-threads",
    "1",
]
EVAL_EPISODES = 2
BREAKOUT_ACTIONS = 4  # envpool Breakout-v5 with the minimal action set: NOOP, FIRE, RIGHT, LEFT

CHECKPOINT_KEYS = {"model", "optimizer", "args", "global_step", "iteration", "rng"}
EVALS_HEADER = ["global_step", "mean_return", "std_return", "episode_returns"]


# The files whose runs take longest, first: pytest-xdist (`--dist loadfile`) hands whole files to the workers in
# collection order, so the workers end together instead of one running a long file alone at the end.
LONGEST_FIRST = ["test_robust_runs.py", "test_topdown.py", "test_temporal.py", "test_fls.py", "test_layout.py", "test_zoo.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


def pytest_configure(config):
    """Under pytest-xdist each worker, and every script and tool it starts, runs on its own share of the cores.
    The scripts and tools size their torch and envpool thread pools by the cores they may use; unpinned, two
    workers each start two-thread processes on a 2-core machine, and torch's spinning threads fighting over the
    cores made a 3-game evaluation 4-5x slower than alone."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...; unset with -n 0
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index, count = int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.sched_setaffinity(0, cores[index::count] or [cores[index % len(cores)]])  # disjoint shares while cores last

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the tests that run models in the worker itself


def load_module(path, name=None):
    """Import a Python file as a module (without running its `__main__` block)."""
    path = Path(path)
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclass / tyro type resolution looks the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@pytest.fixture(scope="session")
def script():
    """ppo_atari_selfattn.py imported as a module."""
    return load_module(SCRIPT, "ppo_atari_selfattn")


def script_env():
    env = dict(os.environ)
    env["WANDB_MODE"] = "offline"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_script(args, cwd, timeout=300, script=SCRIPT):
    """Run a training script (default ppo_atari_selfattn.py) with `args` in `cwd`; returns the CompletedProcess
    (text stdout/stderr)."""
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=cwd,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(proc):
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


def assert_ok(proc):
    assert proc.returncode == 0, describe(proc)


def find_run_dirs(cwd, variant, seed, game="Breakout"):
    return sorted(Path(cwd).glob(f"runs/{game}__ppo_atari_selfattn__{variant}__{seed}__*"))


def single_run_dir(cwd, variant, seed, game="Breakout"):
    dirs = find_run_dirs(cwd, variant, seed, game)
    assert len(dirs) == 1, f"expected one run folder for {game}/{variant}/seed {seed} in {cwd}/runs, found {dirs}"
    assert dirs[0].is_dir()
    return dirs[0]


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from all tensorboard event files in run_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(run_dir).glob("events.out.tfevents.*"))
    assert files, f"no tensorboard events file in {run_dir}"
    scalars = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(values) for tag, values in scalars.items()}


def read_evals(run_dir):
    """(header, rows) of run_dir/evals.csv."""
    path = Path(run_dir) / "evals.csv"
    assert path.is_file(), f"missing {path}"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows, f"{path} is empty"
    return rows[0], rows[1:]


def checkpoint_files(run_dir):
    return sorted(Path(run_dir).glob("step_*.cleanrl_model"))


def checkpoint_step(path):
    """step_000000032.cleanrl_model -> 32"""
    return int(Path(path).name[len("step_") :].split(".")[0])


def load_checkpoint(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


# Checkpoints for the attention_utils tests: a CWCA self-attention agent, a sparse FLS agent and a (small)
# recurrent top-down attention agent trained for 256 steps each, once per test session.
TRAIN_FOR_TOOLS = [
    "--env-id",
    "Breakout",
    "--num-envs",
    "2",
    "--num-steps",
    "32",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--eval-episodes",
    "1",
    "--eval-freq",
    "100000",
    "--save-freq",
    "100000",
    "--torch-threads",
    "1",
    "--env-threads",
    "1",
    "--total-timesteps",
    "256",
]
TOOL_AGENTS = [
    ("ppo_atari_selfattn.py", ["--self-attn", "CWCA"]),
    ("ppo_atari_fls.py", ["--arch", "sparse_fls"]),
    (
        "ppo_atari_topdown.py",
        [
            "--precision",
            "fp32",
            "--conv-channels",
            "16",
            "--value-channels",
            "24",
            "--core-hidden",
            "32",
            "--mlp-hidden",
            "32",
            "--query-hidden",
            "32",
        ],
    ),
]


@pytest.fixture(scope="session")
def trained_checkpoints(tmp_path_factory):
    """{script file name: checkpoint path} for ppo_atari_selfattn.py (CWCA), ppo_atari_fls.py (sparse_fls) and
    ppo_atari_topdown.py (topdown queries, 4 heads). Trained once per test session: under pytest-xdist the first
    worker to need them trains them in the session's shared temporary folder, holding a file lock, and the others
    wait for it and read them (tests only read these runs; a test that writes copies the run first)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' folders (popen-gw0, ...) sit in the session's folder
    cwd = shared / "trained"
    with open(shared / "trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cwd / "complete").exists():
            shutil.rmtree(cwd, ignore_errors=True)  # what a worker that failed here left
            cwd.mkdir()
            for script, flags in TOOL_AGENTS:
                assert_ok(run_script([*TRAIN_FOR_TOOLS, *flags], cwd, timeout=600, script=REPO / script))
            (cwd / "complete").touch()
    paths = {}
    for script, _ in TOOL_AGENTS:
        (paths[script],) = list(cwd.glob(f"runs/*__{script[:-3]}__*/step_000000256.cleanrl_model"))
    return paths


def hand_built_checkpoint(path, script_name, game="Breakout", num_actions=4, **settings):
    """A checkpoint as the scripts write it (model, args, script, global_step) of an untrained agent built by the
    script's own `make_agent` for `game` (`num_actions`: its minimal action set; Breakout 4, Pong 6): `load_agent`
    rebuilds it like any other."""
    import dataclasses

    import torch

    from attention_utils.checkpoints import import_script

    script = import_script(script_name)
    args = script.Args(env_id=game, **settings)
    torch.manual_seed(0)
    agent = script.make_agent(args, num_actions)
    torch.save({"model": agent.state_dict(), "args": dataclasses.asdict(args), "script": script_name, "global_step": 0}, path)
    return path
