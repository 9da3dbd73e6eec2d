"""attention_utils.evaluations (the Free-Lunch Saliency paper's Tables 3 and 5 and its episode length vs return
plots from --eval-only results) on hand-made eval_only CSVs: every number is worked out by hand here. No training;
seconds."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attention_utils import evaluations, results

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


REPO = Path(__file__).resolve().parents[1]


def write_fls_run(root, arch, seed, env_id="Breakout", exp_name="ppo_atari_fls", with_args=True):
    """A run folder of ppo_atari_fls.py (args.json only: --eval-only results need no evals.csv here)."""
    folder = Path(root) / f"Breakout__{exp_name}__{arch}__{seed}__1795316730"
    folder.mkdir(parents=True, exist_ok=True)
    if with_args:
        args = {"exp_name": exp_name, "seed": seed, "env_id": env_id, "arch": arch, "total_timesteps": 1000}
        (folder / "args.json").write_text(json.dumps(args, indent=2))
    return folder


def write_eval_only(folder, game, step, returns, lengths=None, copy=None):
    """eval_only_<game>_step_<step>_<N>ep[-copy].csv as attention_utils.runs.eval_only writes it."""
    lengths = lengths if lengths is not None else [100 * (i + 1) for i in range(len(returns))]
    suffix = f"-{copy}" if copy else ""
    path = Path(folder) / f"eval_only_{game}_step_{step:09d}_{len(returns)}ep{suffix}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["episode", "env", "return", "length"])
        for i, (episode_return, length) in enumerate(zip(returns, lengths)):
            writer.writerow([i, i % 2, f"{episode_return:g}", length])
    return path


# nature: seed 1 [10, 20], seed 2 [30, 40] on Breakout -> 25 +- sqrt(125); BreakoutInfinite: each + 10 -> 35 (+40%)
# sparse_fls: seed 1 [0, 0, 6, 6] on Breakout only -> 3 +- 3
TABLE_RUNS = {
    ("nature", 1): {"Breakout": [10, 20], "BreakoutInfinite": [20, 30]},
    ("nature", 2): {"Breakout": [30, 40], "BreakoutInfinite": [40, 50]},
    ("sparse_fls", 1): {"Breakout": [0, 0, 6, 6]},
}


@pytest.fixture
def table_runs(tmp_path):
    for (arch, seed), games in TABLE_RUNS.items():
        folder = write_fls_run(tmp_path / "runs", arch, seed)
        for game, returns in games.items():
            write_eval_only(folder, game, 1000, returns)
    return tmp_path / "runs"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table_cells_by_hand(table_runs):
    selected = evaluations.select_evaluations(evaluations.read_eval_only_files([table_runs]))
    cells = evaluations.eval_only_summary(selected)
    nature = cells["nature", "Breakout"]
    assert nature.mean == 25 and nature.std == pytest.approx(math.sqrt((15**2 + 5**2 + 5**2 + 15**2) / 4))
    assert (nature.num_models, nature.num_episodes, nature.seeds, nature.steps) == (2, 4, [1, 2], [1000, 1000])
    assert nature.model_means_std == pytest.approx(math.sqrt(200))  # means 15 and 35, ddof=1
    assert nature.model_means_se == pytest.approx(10.0)
    assert nature.change is None
    assert cells["nature", "BreakoutInfinite"].change == pytest.approx(40.0)  # (35 - 25) / 25
    sparse = cells["sparse_fls", "Breakout"]
    assert (sparse.mean, sparse.std, sparse.num_models) == (3, 3, 1) and math.isnan(sparse.model_means_std)
    table = evaluations.eval_only_markdown(cells)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| Model | Breakout | BreakoutInfinite |"
    assert lines[1] == "| nature | 25.0 ± 11.2 | 35.0 ± 11.2 (+40.0%) |"  # Table 3's row order: nature first
    assert lines[2] == "| sparse_fls | 3.0 ± 3.0 | – |"
    assert "1 to 2 model(s) and 4 episodes per cell" in table and "(Table 5)" in table


def test_one_evaluation_per_model_latest_step_most_episodes_first_copy(tmp_path, capsys):
    folder = write_fls_run(tmp_path / "runs", "nature", 1)
    write_eval_only(folder, "Breakout", 500, [999, 999])  # an earlier checkpoint
    write_eval_only(folder, "Breakout", 1000, [1, 2])
    write_eval_only(folder, "Breakout", 1000, [7, 7], copy=2)  # a second evaluation of the same checkpoint
    write_eval_only(folder, "Breakout", 1000, [3, 4, 5])  # more episodes
    write_eval_only(folder, "BreakoutInfinite", 1000, [1, 2])
    write_eval_only(folder, "BreakoutInfinite", 1000, [8, 8], copy=2)
    selected = evaluations.select_evaluations(evaluations.read_eval_only_files([tmp_path / "runs"]))
    assert [(e.game, e.returns.tolist(), e.copy) for e in selected] == [
        ("Breakout", [3, 4, 5], 1),
        ("BreakoutInfinite", [1, 2], 1),
    ]
    notes = capsys.readouterr().out
    assert "4 evaluations of nature/seed 1 on Breakout" in notes and "step_000000500_2ep.csv" in notes
    assert "2 evaluations of nature/seed 1 on BreakoutInfinite" in notes


def test_model_named_from_the_checkpoint_without_args_json(tmp_path, capsys):
    folder = write_fls_run(tmp_path / "copied", "sparse_fls_pool", 3, with_args=False)
    args = {"exp_name": "ppo_atari_fls", "seed": 3, "env_id": "Breakout", "arch": "sparse_fls_pool"}
    torch.save(
        {"model": {}, "args": args, "script": "ppo_atari_fls.py", "global_step": 64}, folder / "step_000000064.cleanrl_model"
    )
    path = write_eval_only(folder, "BreakoutInfinite", 64, [5, 7])
    evaluation = evaluations.read_eval_only(path)
    assert (evaluation.variant, evaluation.seed, evaluation.game, evaluation.step) == (
        "sparse_fls_pool",
        3,
        "BreakoutInfinite",
        64,
    )
    assert evaluation.returns.tolist() == [5, 7] and evaluation.lengths.tolist() == [100, 200]
    # without args.json or the checkpoint the model cannot be named
    lonely = write_eval_only(tmp_path / "copied", "Breakout", 64, [1])
    with pytest.raises(results.ResultsError, match="no args.json and no checkpoint step_000000064.cleanrl_model"):
        evaluations.read_eval_only(lonely)
    (tmp_path / "copied" / "step_000000064.cleanrl_model").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(results.ResultsError, match="step_000000064.cleanrl_model: not a readable checkpoint"):
        evaluations.read_eval_only(lonely)


def test_unknown_script_is_skipped_with_a_note(tmp_path, capsys):
    folder = tmp_path / "runs" / "Pong__ppo_atari_envpool__1"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"exp_name": "ppo_atari_envpool", "seed": 1, "env_id": "Pong"}))
    write_eval_only(folder, "Pong", 10, [1.0])
    assert evaluations.read_eval_only_files([tmp_path / "runs"]) == []
    assert "ppo_atari_envpool" in capsys.readouterr().out


def test_games_ordered_with_the_modified_game_after_its_original():
    assert evaluations.ordered_games(["Seaquest", "BreakoutInfinite", "Breakout", "Alien"]) == [
        "Alien",
        "Breakout",
        "BreakoutInfinite",
        "Seaquest",
    ]
    assert evaluations.ordered_games(["BreakoutInfinite", "Seaquest"]) == ["BreakoutInfinite", "Seaquest"]


def test_episode_density_by_hand():
    # 2 x 2 grid over lengths [10, 20] and returns [0, 5]: cells (low, low) holds 2 episodes, (high, high) 3
    density = evaluations.episode_density([10, 10, 20, 20, 20], [0, 0, 5, 5, 5], bins=2)
    assert density.tolist() == [2, 2, 3, 3, 3]
    density = evaluations.episode_density([10, 12, 20, 20], [0, 5, 0, 5], bins=2)  # one per cell but (high, low, x2)
    assert density.tolist() == [1, 1, 1, 1]
    assert evaluations.episode_density([7, 7, 7], [1, 1, 1], bins=4).tolist() == [3, 3, 3]  # all in one point


def test_length_vs_return_panels_pool_the_models(table_runs):
    selected = evaluations.select_evaluations(evaluations.read_eval_only_files([table_runs]))
    panels = evaluations.length_vs_return_panels(selected, "Breakout", bins=2)
    assert list(panels) == ["nature", "sparse_fls"]
    lengths, returns, density = panels["nature"]
    assert lengths.tolist() == [100, 200, 100, 200] and returns.tolist() == [10, 20, 30, 40]  # seed 1, then seed 2
    # lengths split at 150, returns at 25: (100, 10), (200, 20), (100, 30), (200, 40) are one per cell
    assert density.tolist() == [1, 1, 1, 1]
    assert list(evaluations.length_vs_return_panels(selected, "BreakoutInfinite")) == ["nature"]


def run_cli(*args):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "attention_utils.results", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_the_table_and_plots_from_eval_only_results(table_runs, tmp_path):
    """Run folders with --eval-only results but no evals.csv (e.g. checkpoints copied out to be evaluated): only the
    evaluation outputs are written."""
    out = tmp_path / "out"
    proc = run_cli("--runs", table_runs, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {(row["variant"], row["game"]): row for row in read_csv(out / "eval_only.csv")}
    assert list(rows) == [("nature", "Breakout"), ("nature", "BreakoutInfinite"), ("sparse_fls", "Breakout")]
    infinite = rows["nature", "BreakoutInfinite"]
    assert float(infinite["mean"]) == 35 and float(infinite["std_episodes"]) == pytest.approx(math.sqrt(125))
    assert float(infinite["change_vs_original_pct"]) == pytest.approx(40) and infinite["original_game"] == "Breakout"
    assert (infinite["num_models"], infinite["num_episodes"], infinite["seeds"], infinite["steps"]) == (
        "2",
        "4",
        "1;2",
        "1000;1000",
    )
    assert float(rows["nature", "Breakout"]["std_of_model_means"]) == pytest.approx(math.sqrt(200))
    assert (
        rows["sparse_fls", "Breakout"]["std_of_model_means"] == ""
        and rows["sparse_fls", "Breakout"]["change_vs_original_pct"] == ""
    )
    assert "| nature | 25.0 ± 11.2 | 35.0 ± 11.2 (+40.0%) |" in (out / "eval_only.md").read_text()
    for game in ("Breakout", "BreakoutInfinite"):
        assert (out / f"length_vs_return_{game}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "per_game.md").exists()  # no evals.csv, no training tables


BAD_EVAL_ONLY = [
    ("episode,env,return,length\n0,0,5,100\n1,1,five,100\n", "line 3: return 'five' is not a finite number"),
    ("episode,env,return,length\n0,0,5,0\n", "line 2: length '0' is not a whole number >= 1"),
    ("episode,env,return,length\n0,0,inf,10\n", "line 2: return 'inf' is not a finite number"),
    ("episode,env,return\n0,0,5\n", "line 1: header 'episode,env,return' has no length column"),
    ("episode,env,return,length\n", "no episodes (only a header)"),
    ("", "line 1: empty file; expected the header episode,env,return,length"),
]


@pytest.mark.parametrize("text, expected", BAD_EVAL_ONLY)
def test_malformed_eval_only_csv_is_named_by_path_and_line(tmp_path, text, expected):
    folder = write_fls_run(tmp_path / "runs", "nature", 1)
    path = folder / "eval_only_Breakout_step_000001000_2ep.csv"
    path.write_text(text)
    with pytest.raises(SystemExit) as error:
        results.main(results.Args(out=tmp_path / "out", runs=(tmp_path / "runs",)))
    message = str(error.value.code)
    assert message.startswith(f"error: {path}") and expected in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_eval_only_name_that_is_a_folder_is_an_error(tmp_path):
    folder = write_fls_run(tmp_path / "runs", "nature", 1)
    (folder / "eval_only_Breakout_step_000001000_2ep.csv").mkdir()
    with pytest.raises(SystemExit, match="eval_only_Breakout_step_000001000_2ep.csv is a folder, not a file"):
        results.main(results.Args(out=tmp_path / "out", runs=(tmp_path / "runs",)))
