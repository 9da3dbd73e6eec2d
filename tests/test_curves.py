"""attention_utils.curves on hand-written run folders: the table's rows and columns, the picture, the refusals."""

import json
import subprocess
import sys

import matplotlib.image
import pytest
from conftest import REPO, describe, script_env

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


def run_folder(path, game, rows):
    path.mkdir()
    (path / "args.json").write_text(json.dumps({"env_id": game}))
    lines = ["global_step,mean_return,std_return,episode_returns"]
    lines += [f"{step},{mean:.4f},1.0000,{mean:g};{mean:g}" for step, mean in rows]
    (path / "evals.csv").write_text("\n".join(lines) + "\n")
    return path


def curves(*args):
    command = [sys.executable, "-m", "attention_utils.curves", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)


def test_table_and_picture_of_runs_beside_anchors(tmp_path):
    a = run_folder(tmp_path / "a", "Breakout", [(200704, 3.8), (401408, 10.2), (1001472, 17.4)])
    b = run_folder(tmp_path / "b", "Breakout", [(200704, 3.6), (400384, 5.8)])  # another batch size: other steps
    anchors = tmp_path / "anchors.csv"
    anchors.write_text(
        "game,source,global_step,mean_return\nBreakout,CleanRL,1000000,18\nBreakout,CleanRL,10000000,389.57\n"
        "Pong,CleanRL,1000000,-12\n"
    )
    out = tmp_path / "figs" / "c.png"
    proc = curves("--runs", a, b, "--labels", "paper", "cleanrl", "--anchors", anchors, "--out", out)
    assert proc.returncode == 0, describe(proc)
    assert (out.with_suffix(".md")).read_text() == (
        "| steps | paper | cleanrl | CleanRL |\n|---|---|---|---|\n| 0.2M | 3.8 | 3.6 |  |\n| 0.4M | 10.2 | 5.8 |  |\n"
        "| 1.0M | 17.4 |  | 18 |\n"
    )
    assert matplotlib.image.imread(out).shape[1] >= 500
    again = curves("--runs", a, "--out", out)  # the first picture and table are kept
    assert again.returncode == 0 and (tmp_path / "figs" / "c-2.png").is_file() and (tmp_path / "figs" / "c-2.md").is_file()
    assert "| 0.2M | 3.8 |" in (tmp_path / "figs" / "c-2.md").read_text()


def test_refusals(tmp_path):
    a = run_folder(tmp_path / "a", "Breakout", [(200704, 3.8)])
    p = run_folder(tmp_path / "p", "Pong", [(200704, -20.0)])
    for args, line in [
        (["--runs", a, p], "error: --runs are of several games (Breakout, Pong); give runs of one game"),
        (["--runs", a, "--labels", "x", "y"], "error: --labels: 2 labels for 1 runs; give one per run, or none"),
        (["--runs", tmp_path], f"error: --runs {tmp_path}: no evals.csv and args.json there; give run folders of the"),
    ]:
        proc = curves(*args, "--out", tmp_path / "c.png")
        assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(line), describe(proc)
        assert not (tmp_path / "c.png").exists()
