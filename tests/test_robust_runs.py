"""Runs that survive: atomic writes, resume from a run folder, Ctrl-C / SIGTERM, kill -9, a diverging loss, a full
disk or read-only folder, unusable checkpoints and absurd settings. Every fault is injected into the real entry
point (`python ppo_atari_selfattn.py ...`): a real signal, a real SIGKILL at a chosen moment (a small wrapper patches
a library call to kill the process there), a poisoned reward, a real tmpfs that fills up."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    SCRIPT,
    TINY,
    checkpoint_files,
    checkpoint_step,
    describe,
    load_checkpoint,
    read_evals,
    run_script,
    script_env,
    single_run_dir,
)

ATTN_UTILS_ENV = {"PYTHONPATH": str(SCRIPT.parent)}

# A fault injected into the real script: `python -c FAULT <script> <args>` patches one library call, then runs the
# script as __main__. FAULT_PHASE picks the call, FAULT_AT the n-th call that faults.
FAULT = r"""
import os, runpy, signal, sys
import numpy as np, torch, envpool

phase, fault_at, calls = os.environ["FAULT_PHASE"], int(os.environ["FAULT_AT"]), [0]

def counted():
    calls[0] += 1
    return calls[0] == fault_at

if phase == "rollout":  # SIGKILL while the training envs step (their send(); the eval pool is made third)
    make, made = envpool.make, []
    class Killing:
        def __init__(self, env):
            self.env = env
        def __getattr__(self, name):
            return getattr(self.env, name)
        def send(self, action):
            if counted():
                os.kill(os.getpid(), signal.SIGKILL)
            return self.env.send(action)
    def make_killing(*a, **k):
        made.append(make(*a, **k))
        return Killing(made[-1]) if len(made) <= 2 else made[-1]
    envpool.make = make_killing
elif phase == "poison":  # a NaN reward from the training envs at the n-th step received
    make, made = envpool.make, []
    class Poisoned:
        def __init__(self, env):
            self.env = env
        def __getattr__(self, name):
            return getattr(self.env, name)
        def recv(self):
            obs, reward, terminated, truncated, info = self.env.recv()
            if counted():
                reward = np.full_like(reward, np.nan, dtype=np.float32)
            return obs, reward, terminated, truncated, info
    def make_poisoned(*a, **k):
        made.append(make(*a, **k))
        return Poisoned(made[-1]) if len(made) <= 2 else made[-1]
    envpool.make = make_poisoned
elif phase == "update":  # SIGKILL at the n-th optimizer step
    step = torch.optim.Adam.step
    def killing_step(self, *a, **k):
        if counted():
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *a, **k)
    torch.optim.Adam.step = killing_step
elif phase == "checkpoint":  # SIGKILL during the n-th checkpoint write: half of it on disk, not yet renamed
    replace = os.replace
    def killing_replace(source, destination):
        if str(destination).endswith(".cleanrl_model") and counted():
            os.truncate(source, os.path.getsize(source) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return replace(source, destination)
    os.replace = killing_replace

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

STEPS = [32, 64, 96, 128]  # 4 iterations of 32 steps; an evaluation and a checkpoint after each


def run_with_fault(phase, fault_at, args, cwd, timeout=300):
    env = script_env() | {"FAULT_PHASE": phase, "FAULT_AT": str(fault_at)}
    return subprocess.run(
        [sys.executable, "-c", FAULT, str(SCRIPT), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def continuous_history(run_dir, tag):
    """(step, value) of `tag` as tensorboard shows it: all event files of the folder, a resumed run's purge applied."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def assert_one_line_error(proc, *words):
    assert proc.returncode not in (0, None), describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, describe(proc)
    for word in words:
        assert word in lines[0], describe(proc)
    return lines[0]


def finite_weights(path):
    return all(torch.isfinite(t).all() for t in load_checkpoint(path)["model"].values())


# kill -9 during the rollout (iteration 3's 5th step), the update (iteration 3's first optimizer step: 2 per
# iteration) and the third checkpoint write (step 96); then `--resume <run folder>`
@pytest.mark.parametrize("phase,fault_at", [("rollout", 2 * 32 + 10), ("update", 2 * 2 + 1), ("checkpoint", 3)])
def test_kill_9_then_resume_from_the_folder(tmp_path, phase, fault_at):
    killed = run_with_fault(phase, fault_at, TINY + ["--total-timesteps", STEPS[-1]], tmp_path)
    assert killed.returncode == -signal.SIGKILL, describe(killed)
    run_dir = single_run_dir(tmp_path, "NA", 1)
    written = checkpoint_files(run_dir)
    assert [checkpoint_step(p) for p in written] == [32, 64], describe(killed)
    for path in written:  # whatever carries a checkpoint's name is a whole checkpoint
        assert load_checkpoint(path)["global_step"] == checkpoint_step(path)
    unfinished = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if phase == "checkpoint":  # the half-written checkpoint is a hidden temporary file, never step_000000096
        assert len(unfinished) == 1 and unfinished[0].startswith(".step_000000096.cleanrl_model."), unfinished
    else:
        assert unfinished == []

    resumed = run_script(["--resume", run_dir, "--torch-threads", "1", "--env-threads", "1"], tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert [checkpoint_step(p) for p in checkpoint_files(run_dir)] == STEPS
    assert load_checkpoint(run_dir / "step_000000128.cleanrl_model")["global_step"] == STEPS[-1]
    header, rows = read_evals(run_dir)
    assert [int(r[0]) for r in rows] == STEPS, rows  # no evaluation lost or logged twice
    for tag in ("charts/SPS", "losses/value_loss", "eval/mean_return"):
        assert [step for step, _ in continuous_history(run_dir, tag)] == STEPS, tag


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_the_iteration_with_a_checkpoint_and_the_resume_command(tmp_path, stop_signal):
    args = TINY + ["--total-timesteps", 192, "--save-freq", 64]
    out, err = open(tmp_path / "out.txt", "w"), open(tmp_path / "err.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=tmp_path, env=script_env(), stdout=out, stderr=err
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("runs/*/step_000000064.cleanrl_model")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(stop_signal)
    returncode = proc.wait(timeout=120)
    stdout, stderr = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    report = f"exit {returncode}\n{stdout}\n{stderr}"
    assert returncode == 128 + stop_signal, report
    assert f"{signal.Signals(stop_signal).name}: stopping after this iteration" in stderr, report
    command = stdout.strip().splitlines()[-1]
    assert command.startswith(f"python {SCRIPT} --resume "), report
    stop_checkpoint = Path(tmp_path, command.split("--resume ")[1])
    step = load_checkpoint(stop_checkpoint)["global_step"]
    assert 64 <= step < 192 and stop_checkpoint.name == f"step_{step:09d}.cleanrl_model", report
    if stop_signal == signal.SIGINT:  # the printed command continues the run to its end
        resumed = subprocess.run(
            [sys.executable, *command.split()[1:]], cwd=tmp_path, env=script_env(), capture_output=True, text=True
        )
        assert resumed.returncode == 0, describe(resumed)
        header, rows = read_evals(stop_checkpoint.parent)
        assert [int(r[0]) for r in rows] == list(range(32, 193, 32))


def test_second_ctrl_c_stops_at_once(tmp_path):
    # long iterations (8,192 steps, several seconds), so the second Ctrl-C lands while the first one's iteration is
    # still running even on a loaded machine (with 512-step iterations a delayed second signal could come after the
    # graceful stop had written its checkpoint)
    args = TINY + ["--num-steps", 4096, "--total-timesteps", 8192 * 4, "--save-freq", 8192 * 4, "--eval-freq", 8192 * 4]
    err_path = tmp_path / "err.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *map(str, args)],
            cwd=tmp_path,
            env=script_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.time() + 120
        while not list(tmp_path.glob("runs/*/evals.csv")) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # in the first iteration's rollout
        proc.send_signal(signal.SIGINT)
        while "SIGINT: stopping" not in err_path.read_text() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        returncode = proc.wait(timeout=60)
    assert returncode == -signal.SIGINT, f"exit {returncode}\n{err_path.read_text()}"  # the default handler: no cleanup
    assert not list(tmp_path.glob("runs/*/step_*.cleanrl_model"))


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_loss_never_reaches_the_weights(tmp_path, policy):
    # a NaN reward in iteration 2 (the 40th of 32 steps received per iteration) makes its losses NaN
    proc = run_with_fault("poison", 40, TINY + ["--total-timesteps", 96, "--nan-policy", policy], tmp_path)
    run_dir = single_run_dir(tmp_path, "NA", 1)
    written = checkpoint_files(run_dir)
    if policy == "stop":
        line = assert_one_line_error(proc, "non-finite loss or gradient at iteration 2", "step_000000032.cleanrl_model")
        assert "step 64" in line
        assert [checkpoint_step(p) for p in written] == [32]
    else:
        assert proc.returncode == 0, describe(proc)
        assert [checkpoint_step(p) for p in written] == [32, 64, 96]
        skipped = dict(continuous_history(run_dir, "losses/skipped_minibatches"))
        assert skipped[64] == 2 and skipped[32] == 0 and skipped[96] == 0, skipped
    assert all(finite_weights(p) for p in written)


def checkpoint_bytes(script_module):
    """About the size of a checkpoint of the default NA agent: weights and Adam's two moments."""
    agent = script_module.make_agent(script_module.Args(), 4)
    return 3 * 4 * sum(p.numel() for p in agent.parameters())


@pytest.fixture
def tmpfs(tmp_path):
    """A folder on its own small tmpfs; yields a function that mounts it with a size in bytes."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = []

    def mount(size, read_only=False):
        options = f"size={size}" + (",ro" if read_only else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], check=True)
        mounted.append(mount_point)
        return mount_point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, tmpfs, script):
    # room for one checkpoint and the logs, not for a second checkpoint's temporary file
    disk = tmpfs(int(1.5 * checkpoint_bytes(script)))
    proc = run_script(TINY + ["--total-timesteps", 96], disk)
    line = assert_one_line_error(proc, "cannot write", "step_000000064.cleanrl_model", "No space left on device")
    run_dir = single_run_dir(disk, "NA", 1)
    assert "--resume" in line
    assert [checkpoint_step(p) for p in checkpoint_files(run_dir)] == [32]
    assert load_checkpoint(run_dir / "step_000000032.cleanrl_model")["global_step"] == 32
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 96-step run with checkpoints at 32, 64 and 96."""
    cwd = tmp_path_factory.mktemp("finished")
    proc = run_script(TINY + ["--total-timesteps", 96], cwd)
    assert proc.returncode == 0, describe(proc)
    return single_run_dir(cwd, "NA", 1)


def test_read_only_run_folder_is_refused_before_any_work(tmp_path, tmpfs, finished_run):
    disk = tmpfs(64 << 20)
    run_dir = copy_run(finished_run, disk / finished_run.name, {"args.json", "evals.csv", "step_000000032.cleanrl_model"})
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    proc = run_script(["--resume", run_dir], tmp_path)
    assert_one_line_error(proc, "not writable", str(run_dir))
    assert load_checkpoint(run_dir / "step_000000032.cleanrl_model")["global_step"] == 32


def copy_run(run_dir, destination, names=None):
    destination.mkdir(parents=True)
    for path in run_dir.iterdir():
        if path.is_file() and (names is None or path.name in names):
            (destination / path.name).write_bytes(path.read_bytes())
    return destination


def test_unusable_checkpoints_get_one_line(tmp_path, finished_run):
    good = finished_run / "step_000000032.cleanrl_model"
    truncated, empty = tmp_path / "truncated.cleanrl_model", tmp_path / "empty.cleanrl_model"
    truncated.write_bytes(good.read_bytes()[:5000])
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.cleanrl_model"
    checkpoint = load_checkpoint(good)
    torch.save(checkpoint | {"script": "ppo_atari_fls.py"}, foreign)
    other_game = tmp_path / "pong.cleanrl_model"  # Breakout's 4-action weights under a 6-action game
    torch.save(checkpoint | {"args": checkpoint["args"] | {"env_id": "Pong"}}, other_game)
    cases = [
        (["--resume", truncated], ["truncated or damaged"]),
        (["--resume", empty], ["an empty file"]),
        (["--resume", tmp_path / "missing.cleanrl_model"], ["no such file"]),
        (["--resume", foreign], ["written by ppo_atari_fls.py"]),
        (["--eval-only", "--resume", truncated], ["truncated or damaged"]),
        (["--resume", tmp_path], ["no loadable"]),
    ]
    for args, words in cases:
        assert_one_line_error(run_script(args, tmp_path), *words)
    for path, words in [
        (truncated, ["truncated or damaged"]),
        (other_game, ["do not fit", "Pong"]),
        (tmp_path, ["no loadable"]),
    ]:
        tool = subprocess.run(
            [sys.executable, "-m", "attention_utils.enjoy", "--checkpoint", str(path)],
            cwd=tmp_path,
            env=script_env() | ATTN_UTILS_ENV,
            capture_output=True,
            text=True,
        )
        assert_one_line_error(tool, *words)
    assert not (tmp_path / "runs").exists()


def test_resume_from_a_folder_skips_a_damaged_checkpoint_and_keeps_it(tmp_path, finished_run):
    run_dir = copy_run(
        finished_run,
        tmp_path / "run",
        {"args.json", "evals.csv", "step_000000032.cleanrl_model", "step_000000064.cleanrl_model"},
    )
    damaged = run_dir / "step_000000064.cleanrl_model"
    damaged.write_bytes(damaged.read_bytes()[:3000])
    proc = run_script(["--resume", run_dir, "--total-timesteps", 96, "--torch-threads", "1", "--env-threads", "1"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "skipping" in proc.stderr and "step_000000064.cleanrl_model" in proc.stderr
    assert (run_dir / "step_000000064.cleanrl_model.corrupt").stat().st_size == 3000  # kept, not deleted
    assert [checkpoint_step(p) for p in checkpoint_files(run_dir)] == [32, 64, 96]
    assert [int(r[0]) for r in read_evals(run_dir)[1]] == [32, 64, 96]


def test_malformed_evals_csv_is_named_with_its_line(tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run", {"args.json", "evals.csv", "step_000000032.cleanrl_model"})
    lines = (run_dir / "evals.csv").read_text().splitlines()
    lines[2] = "64,1.0"  # a row cut short
    (run_dir / "evals.csv").write_text("\n".join(lines) + "\n")
    assert_one_line_error(run_script(["--resume", run_dir], tmp_path), f"{run_dir / 'evals.csv'}, line 3")


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--learning-rate", "0"], "--learning-rate"),
        (["--clip-coef", "-0.1"], "--clip-coef"),
        (["--ent-coef", "-0.01"], "--ent-coef"),
        (["--vf-coef", "-1"], "--vf-coef"),
        (["--max-grad-norm", "0"], "--max-grad-norm"),
        (["--target-kl", "0"], "--target-kl"),
        (["--gamma", "1.5"], "--gamma"),
        (["--gae-lambda", "0"], "--gae-lambda"),
        (["--eval-episodes", "0"], "--eval-episodes"),
        (["--eval-freq", "0"], "--eval-freq"),
        (["--save-freq", "-5"], "--save-freq"),
        (["--update-epochs", "0"], "--update-epochs"),
        (["--num-envs", "0"], "--num-envs"),
        (["--total-timesteps", "0"], "--total-timesteps"),
        (["--rollout-threads", "0"], "thread counts"),
    ],
)
def test_absurd_settings_are_refused_before_any_work(tmp_path, flags, words):
    proc = run_script(TINY + flags, tmp_path)
    assert_one_line_error(proc, words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.quick
def test_tools_write_files_whole_or_not_at_all(tmp_path):
    from attention_utils.runs import atomic_open, write_text

    path = tmp_path / "table.md"
    write_text(path, "first version\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half of the second ver")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "first version\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]  # no temporary file left behind
    write_text(path, "second version\n")
    assert path.read_text() == "second version\n"


def test_resume_onto_another_device_says_what_changed(tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run", {"args.json", "evals.csv", "step_000000064.cleanrl_model"})
    path = run_dir / "step_000000064.cleanrl_model"
    checkpoint = load_checkpoint(path)
    assert checkpoint["rng"]["device"] == "cpu" and "cuda" not in checkpoint["rng"]  # written on this CPU
    checkpoint["rng"] |= {"device": "cuda", "cuda": torch.zeros(16, dtype=torch.uint8)}  # as a CUDA run writes it
    torch.save(checkpoint, path)
    proc = run_script(["--resume", run_dir, "--torch-threads", "1", "--env-threads", "1"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "resume: written on cuda, continuing on cpu" in proc.stdout, describe(proc)
    assert load_checkpoint(run_dir / "step_000000096.cleanrl_model")["rng"]["device"] == "cpu"


def test_a_setting_the_checkpoint_predates_keeps_its_default_on_resume(tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run", {"args.json", "evals.csv", "step_000000064.cleanrl_model"})
    path = run_dir / "step_000000064.cleanrl_model"
    checkpoint = load_checkpoint(path)
    del checkpoint["args"]["clip_vloss"]  # as written before the field existed
    torch.save(checkpoint, path)
    proc = run_script(["--resume", run_dir, "--clip-vloss", "--torch-threads", "1", "--env-threads", "1"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "ignoring command-line clip_vloss" in proc.stdout, describe(proc)
    assert load_checkpoint(run_dir / "step_000000096.cleanrl_model")["args"]["clip_vloss"] is False  # the default
