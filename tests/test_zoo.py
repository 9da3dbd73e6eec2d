"""The zoo: every shipped agent still plays with today's code; `attention_utils.zoo` exports an agent every tool and
script takes as it is; `--eval-only` keeps its finished games when stopped and refuses a folder it cannot write."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import REPO, describe, script_env

ZOO = REPO / "zoo"
ZOO_AGENTS = sorted(path.parent for path in ZOO.glob("*/card.json"))
ZOO_MAX_BYTES = 30 * 1024 * 1024


def run(args, cwd, timeout=900):
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=timeout
    )


def read_returns(path):
    with open(path, newline="") as f:
        return [float(row["return"]) for row in csv.DictReader(f)]


def only_file(folder, pattern):
    (path,) = list(Path(folder).glob(pattern))
    return path


def error_line(proc):
    assert proc.returncode not in (0, None) and "Traceback" not in proc.stderr, describe(proc)
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, describe(proc)
    return lines[0]


@pytest.mark.quick
def test_zoo_has_agents_and_fits_its_budget():
    assert ZOO_AGENTS, f"no agent in {ZOO} (a folder per agent, each with card.json)"
    size = sum(path.stat().st_size for path in ZOO.rglob("*") if path.is_file())
    assert size <= ZOO_MAX_BYTES, f"zoo/ holds {size / 1e6:.1f} MB, over its 30 MB"


@pytest.mark.parametrize("folder", ZOO_AGENTS, ids=[path.name for path in ZOO_AGENTS])
def test_zoo_agent_still_plays(folder, tmp_path):
    """It loads with today's code and a short fixed-seed evaluation scores at least what its card asks."""
    card = json.loads((folder / "card.json").read_text())
    assert folder.name == card["folder"] == f"{card['game']}__{card['script'].removesuffix('.py')}__{card['variant']}"
    checkpoint = torch.load(folder / card["checkpoint"], map_location="cpu", weights_only=False)
    assert "optimizer" not in checkpoint and checkpoint["global_step"] == card["steps"]
    assert card["evaluation"]["episodes"] >= 30
    assert read_returns(folder / card["evaluation"]["file"]) and (folder / "learning.png").is_file()
    check = card["check"]
    command = [REPO / card["script"], "--eval-only", "--resume", folder / card["checkpoint"]]
    command += ["--eval-episodes", check["episodes"], "--precision", check["precision"], "--eval-dir", tmp_path]
    proc = run(command, REPO)
    assert proc.returncode == 0, describe(proc)
    returns = read_returns(only_file(tmp_path, "eval_only_*.csv"))
    assert len(returns) == check["episodes"]
    assert np.mean(returns) >= check["min_mean"], f"{folder.name}: {returns}, the card asks a mean of {check['min_mean']}"
    assert not list(folder.glob("eval_only_*_step_*_%dep*.csv" % check["episodes"])), "the zoo folder was written to"


@pytest.fixture(scope="module")
def cwca(trained_checkpoints, tmp_path_factory):
    """A copy of the session's 256-step CWCA run (Breakout) and a 30-game --eval-only of its checkpoint."""
    run_dir = tmp_path_factory.mktemp("cwca") / "run"
    shutil.copytree(Path(trained_checkpoints["ppo_atari_selfattn.py"]).parent, run_dir)
    checkpoint = run_dir / "step_000000256.cleanrl_model"
    proc = run([REPO / "ppo_atari_selfattn.py", "--eval-only", "--resume", checkpoint, "--eval-episodes", 30], REPO)
    assert proc.returncode == 0, describe(proc)
    return checkpoint, only_file(run_dir, "eval_only_Breakout_step_000000256_30ep.csv")


@pytest.fixture(scope="module")
def exported(cwca, tmp_path_factory):
    checkpoint, evaluation = cwca
    zoo = tmp_path_factory.mktemp("zoo")
    anchors = zoo.parent / "anchors.csv"
    anchors.write_text("game,source,global_step,mean_return\nBreakout,reference,0,1.5\nBreakout,reference,512,3\nPong,x,0,9\n")
    command = ["-m", "attention_utils.zoo", "--checkpoint", checkpoint, "--evaluation", evaluation, "--out", zoo]
    proc = run(command + ["--anchors", anchors, "--machine", "test machine", "--check-min-mean", "-1"], REPO)
    assert proc.returncode == 0, describe(proc)
    return zoo / "Breakout__ppo_atari_selfattn__CWCA"


def test_export_writes_a_card_and_a_checkpoint_without_optimizer(cwca, exported):
    checkpoint, evaluation = cwca
    card = json.loads((exported / "card.json").read_text())
    returns = read_returns(evaluation)
    assert card["steps"] == 256 and card["machine"] == "test machine" and card["check"]["min_mean"] == -1
    assert card["evaluation"]["mean"] == pytest.approx(np.mean(returns)) and card["evaluation"]["episodes"] == 30
    assert card["command"].startswith("python ppo_atari_selfattn.py ") and "--self-attn CWCA" in card["command"]
    assert "--env-id Breakout" in card["command"] and "--total-timesteps 256" in card["command"]
    assert card["training_seconds"] > 0
    original = torch.load(checkpoint, map_location="cpu", weights_only=False)
    kept = torch.load(exported / card["checkpoint"], map_location="cpu", weights_only=False)
    assert set(original) - set(kept) == {"optimizer"}
    assert all(torch.equal(kept["model"][k], v) for k, v in original["model"].items())
    readme = (exported / "README.md").read_text()
    assert f"{np.mean(returns):.1f} ± {np.std(returns):.1f}" in readme and "![learning curve](learning.png)" in readme
    assert card["command"] in readme and "test machine" in readme
    assert matplotlib.image.imread(exported / "learning.png").shape[0] > 200
    assert (exported / "evals.csv").read_text() == (checkpoint.parent / "evals.csv").read_text()
    assert (exported / evaluation.name).read_text() == evaluation.read_text()


def test_export_refuses_bad_input_in_one_line(cwca, exported, tmp_path):
    checkpoint, evaluation = cwca
    command = ["-m", "attention_utils.zoo", "--checkpoint", checkpoint, "--out", exported.parent]
    assert "exists" in error_line(run(command + ["--evaluation", evaluation], REPO))  # never overwritten
    few = tmp_path / "eval_only_Breakout_step_000000256_3ep.csv"
    few.write_text("episode,env,return,length\n0,0,1,100\n1,1,2,100\n2,2,0,100\n")
    out = ["--out", tmp_path / "zoo"]
    assert "has 3 games; a card needs at least 30" in error_line(run(command[:-2] + out + ["--evaluation", few], REPO))
    other_step = tmp_path / "eval_only_Breakout_step_000000128_30ep.csv"
    other_step.write_text(evaluation.read_text())
    assert "not the --eval-only CSV of step 256" in error_line(run(command[:-2] + out + ["--evaluation", other_step], REPO))
    assert not (tmp_path / "zoo").exists()


def test_exported_agent_evaluates_without_touching_its_folder(exported, tmp_path):
    before = sorted(path.name for path in exported.iterdir())
    checkpoint = exported / "step_000000256.cleanrl_model"
    command = [REPO / "ppo_atari_selfattn.py", "--eval-only", "--resume", checkpoint, "--eval-episodes", 2]
    proc = run(command + ["--eval-dir", tmp_path / "evals"], REPO)
    assert proc.returncode == 0, describe(proc)
    assert len(read_returns(tmp_path / "evals" / "eval_only_Breakout_step_000000256_2ep.csv")) == 2
    assert sorted(path.name for path in exported.iterdir()) == before


def test_every_tool_takes_an_exported_agent(exported, tmp_path):
    checkpoint = exported / "step_000000256.cleanrl_model"
    tools = [
        ["attention_utils.enjoy", "--episodes", 1, "--out", tmp_path / "enjoy"],
        ["attention_utils.perturbation", "--frames", 1, "--warmup", 3, "--stride", 12, "--out", tmp_path / "p.png"],
        ["attention_utils.objects", "--frames", 4, "--negatives", 2, "--figure-frames", 1, "--out", tmp_path / "objects"]
        + ["--perturbation-stride", 12],
        ["attention_utils.gradcam", "--frames", 1, "--warmup", 3, "--out", tmp_path / "gradcam.png"],
        ["attention_utils.novel_object", "--inject-step", 2, "--steps", 6, "--out", tmp_path / "novel"],
        ["attention_utils.pictures", "--out", tmp_path / "attention.png"],
    ]
    for tool, *options in tools:
        proc = run(["-m", tool, "--checkpoint", checkpoint, *options], REPO)
        assert proc.returncode == 0, describe(proc)
    assert list((tmp_path / "enjoy").glob("*.mp4")) and (tmp_path / "p.png").is_file()
    assert list((tmp_path / "objects").glob("*.csv")) and (tmp_path / "novel.csv").is_file()
    assert matplotlib.image.imread(tmp_path / "gradcam.png").shape[1] > 500  # frame | Grad-CAM | Grad-CAM++ | attention
    assert matplotlib.image.imread(tmp_path / "attention.png").shape[0] > 400  # frame | attention | c1 features, 4 rows


def test_resume_from_a_zoo_agent_trains_on_and_the_card_continues(trained_checkpoints, tmp_path):
    """An exported agent with steps left in its schedule trains on with a fresh Adam (said in one line) in a new run
    folder, leaving the zoo folder as it was; `--continues` gives the new card the whole history."""
    run_dir = tmp_path / "first_run"  # sparse_fls, 256 steps of 2 x 32, given a 320-step schedule so it can go on
    shutil.copytree(Path(trained_checkpoints["ppo_atari_fls.py"]).parent, run_dir)
    checkpoint_path = run_dir / "step_000000256.cleanrl_model"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    checkpoint["args"].update(total_timesteps=320, num_iterations=5)
    torch.save(checkpoint, checkpoint_path)

    def evaluate_and_export(path, *options):
        proc = run([REPO / "ppo_atari_fls.py", "--eval-only", "--resume", path, "--eval-episodes", 30], REPO)
        assert proc.returncode == 0, describe(proc)
        evaluation = only_file(path.parent, f"eval_only_Breakout_step_{int(path.name[5:14]):09d}_30ep.csv")
        command = ["-m", "attention_utils.zoo", "--checkpoint", path, "--evaluation", evaluation, "--out", tmp_path / "zoo"]
        proc = run(command + ["--machine", "machine A", *options], REPO)
        assert proc.returncode == 0, describe(proc)
        return tmp_path / "zoo" / "Breakout__ppo_atari_fls__sparse_fls"

    first = evaluate_and_export(checkpoint_path)
    aside = first.rename(tmp_path / "first_card")
    zoo_files = sorted(path.name for path in aside.iterdir())
    proc = run([REPO / "ppo_atari_fls.py", "--resume", aside / "step_000000256.cleanrl_model"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.count("resume: no optimizer state in the checkpoint") == 1
    assert sorted(path.name for path in aside.iterdir()) == zoo_files  # left as it was
    (new_run,) = list(tmp_path.glob("runs/Breakout__ppo_atari_fls__sparse_fls__*"))
    resumed = torch.load(new_run / "step_000000320.cleanrl_model", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 320 and resumed["iteration"] == 5 and "optimizer" in resumed
    assert any(not torch.equal(resumed["model"][k], v) for k, v in checkpoint["model"].items())  # it trained

    card = json.loads(
        (evaluate_and_export(new_run / "step_000000320.cleanrl_model", "--continues", aside) / "card.json").read_text()
    )
    first_card = json.loads((aside / "card.json").read_text())
    assert card["steps"] == 320 and card["continued_from"] == 256 and card["machine"] == "machine A"
    assert card["training_seconds"] > first_card["training_seconds"] > 0
    new_evals = (tmp_path / "zoo" / "Breakout__ppo_atari_fls__sparse_fls" / "evals.csv").read_text().splitlines()
    assert new_evals[:-1] == (aside / "evals.csv").read_text().splitlines()  # the first run's, then step 320's
    assert new_evals[-1].startswith("320,")
    assert "resumed from that checkpoint with a fresh Adam" in (tmp_path / "zoo" / card["folder"] / "README.md").read_text()
    other = tmp_path / "other"  # a zoo folder of another agent is refused
    shutil.copytree(aside, other)
    settings = json.loads((other / "args.json").read_text())
    wrong = torch.load(other / "step_000000256.cleanrl_model", map_location="cpu", weights_only=False)
    wrong["args"]["ent_coef"] = 0.5
    torch.save(wrong, other / "step_000000256.cleanrl_model")
    assert settings["ent_coef"] != 0.5
    command = ["-m", "attention_utils.zoo", "--checkpoint", new_run / "step_000000320.cleanrl_model", "--out", tmp_path / "z2"]
    command += ["--evaluation", only_file(new_run, "eval_only_*_30ep.csv"), "--continues", other]
    assert "trained with other settings" in error_line(run(command, REPO))


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_evaluation_keeps_the_finished_games(cwca, tmp_path, stop_signal):
    checkpoint, _ = cwca
    command = [sys.executable, REPO / "ppo_atari_selfattn.py", "--eval-only", "--resume", checkpoint]
    command += ["--eval-episodes", 5000, "--eval-dir", tmp_path]
    command = [str(part) for part in command]
    proc = subprocess.Popen(command, cwd=REPO, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_line = proc.stdout.readline()  # printed once the pool and the agent are ready
    assert first_line.startswith("eval-only: CWCA at step 256"), first_line + proc.stderr.read()
    progress = proc.stdout.readline()  # without a terminal, the first game's end is printed
    assert progress == "eval-only: 1/5000 games finished\n", progress + proc.stderr.read()
    proc.send_signal(stop_signal)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop_signal and "Traceback" not in stderr, stdout + stderr
    (line,) = [line for line in stdout.splitlines() if line.startswith("eval-only: stopped")]
    finished = int(line.split(" after ")[1].split(" of ")[0])
    assert 0 < finished < 5000 and f"stopped by {stop_signal.name}" in line
    path = only_file(tmp_path, f"eval_only_Breakout_step_000000256_{finished}of5000ep_interrupted.csv")
    assert str(path) in line and len(read_returns(path)) == finished


def test_eval_only_refuses_a_folder_it_cannot_write_before_playing(cwca, tmp_path):
    checkpoint, _ = cwca
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        shutil.copy(checkpoint, disk / checkpoint.name)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        command = [REPO / "ppo_atari_selfattn.py", "--eval-only", "--resume", disk / checkpoint.name, "--eval-episodes", 2]
        proc = run(command, REPO)
        line = error_line(proc)
        assert "not writable" in line and "--eval-dir" in line and str(disk) in line
        assert "eval-only:" not in proc.stdout  # refused before the game pool was made, not after the games
        proc = run(command + ["--eval-dir", tmp_path / "out"], REPO)
        assert proc.returncode == 0, describe(proc)
        assert len(read_returns(tmp_path / "out" / "eval_only_Breakout_step_000000256_2ep.csv")) == 2
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    line = error_line(run([REPO / "ppo_atari_selfattn.py", "--eval-only", "--resume", checkpoint, "--eval-dir", a_file], REPO))
    assert "is a file" in line
    assert "--eval-dir is only used with --eval-only" in error_line(
        run([REPO / "ppo_atari_selfattn.py", "--eval-dir", a_file], REPO)
    )


def test_eval_only_sizes_its_pool_by_the_cores_it_may_use(cwca, tmp_path):
    """`--eval-only` plays at most 8 games at once per core it may use: its affinity (a container's or taskset's share,
    as each test worker's is), not the machine's core count. Pinned to one core, 12 games run on 8 envs."""
    checkpoint, _ = cwca
    command = [sys.executable, REPO / "ppo_atari_selfattn.py", "--eval-only", "--resume", checkpoint]
    command += ["--eval-episodes", 12, "--eval-dir", tmp_path]
    one_core = min(os.sched_getaffinity(0))
    proc = subprocess.run(
        list(map(str, command)),
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, {one_core}),
    )
    assert proc.returncode == 0, describe(proc)
    with open(only_file(tmp_path, "eval_only_*_12ep.csv"), newline="") as f:
        envs = sorted({int(row["env"]) for row in csv.DictReader(f)})
    assert envs == list(range(8)), f"12 games on one core were played on envs {envs}"
