"""attention_utils.results on synthetic run folders: every expected number (per-game means and SEs, winners, No. of
wins, human-normalised scores, IQM / median / mean / optimality gap, probability of improvement, alignment shares,
debiased EMA) is worked out by hand here, not with the module's code. No training; seconds."""

import csv
import importlib
import json
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from attention_utils import results
from attention_utils.atari_scores import RANDOM_HUMAN_SCORES, human_normalised_score
from attention_utils.game_axes import AXIS_CLASSES, HORIZONTAL, OTHER, OTHER_KINDS, VERTICAL, axis_class

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`

REPO = Path(__file__).resolve().parents[1]
SQRT3 = math.sqrt(3)
STEPS = [1000, 2000, 3000, 4000]

# per-run mean evaluation scores, seeds 1, 2, 3 (BreakoutInfinite: NA seed 1 only)
RUN_MEANS = {
    "Pong": {"NA": [10, 12, 14], "CWCA": [15, 16, 17]},  # horizontal, CWCA wins
    "Boxing": {"NA": [30, 40, 50], "CWCA": [2, 4, 6]},  # horizontal, NA wins
    "Seaquest": {"NA": [100, 200, 300], "CWCA": [300, 400, 500]},  # horizontal, CWCA wins
    "Breakout": {"NA": [40, 50, 60], "CWCA": [20, 30, 40]},  # vertical, NA wins
    "Hero": {"NA": [1000, 2000, 3000], "CWCA": [1000, 2000, 3000]},  # other (no main axis), tie
    "BreakoutInfinite": {"NA": [7]},  # no reference scores, not classified
}
ENV_IDS = {"Pong": "PongNoFrameskip-v4", "Boxing": "ALE/Boxing-v5", "Seaquest": "Seaquest-v5"}  # the other games: plain
# (mean, SE) by hand: std(ddof=1) of [10, 12, 14] is 2, of [15, 16, 17] is 1, ...
EXPECTED_CELLS = {
    ("Pong", "NA"): (12, 2 / SQRT3),
    ("Pong", "CWCA"): (16, 1 / SQRT3),
    ("Boxing", "NA"): (40, 10 / SQRT3),
    ("Boxing", "CWCA"): (4, 2 / SQRT3),
    ("Seaquest", "NA"): (200, 100 / SQRT3),
    ("Seaquest", "CWCA"): (400, 100 / SQRT3),
    ("Breakout", "NA"): (50, 10 / SQRT3),
    ("Breakout", "CWCA"): (30, 10 / SQRT3),
    ("Hero", "NA"): (2000, 1000 / SQRT3),
    ("Hero", "CWCA"): (2000, 1000 / SQRT3),
    ("BreakoutInfinite", "NA"): (7, math.nan),
}
# BreakoutInfinite has no CWCA run: no winner there
EXPECTED_WINNERS = {"Boxing": ["NA"], "Breakout": ["NA"], "Hero": ["NA", "CWCA"], "Pong": ["CWCA"], "Seaquest": ["CWCA"]}
# random and human scores typed from DQN Zoo's atari_data.py, independently of attention_utils.atari_scores
REFERENCES = {
    "Pong": (-20.7, 14.6),
    "Boxing": (0.1, 12.1),
    "Seaquest": (68.4, 42054.7),
    "Breakout": (1.7, 30.5),
    "Hero": (1027.0, 30826.4),
}


def write_run(root, game, variant, seed, scores, steps=STEPS, exp_name="ppo_atari_selfattn", env_id=None, **extra_args):
    """A run folder as the training scripts write it; returns its path."""
    folder = Path(root) / f"{game}__{exp_name}__{variant}__{seed}__1795316730"
    folder.mkdir(parents=True)
    args = {
        "exp_name": exp_name,
        "seed": seed,
        "env_id": env_id or ENV_IDS.get(game, game),
        "total_timesteps": 4000,
        "track": False,
        **extra_args,
    }
    if exp_name == "ppo_atari_fls":
        args["arch"] = variant
    else:
        args.update(self_attn=variant, ada_attn=extra_args.get("ada_attn", "none"))
    (folder / "args.json").write_text(json.dumps(args, indent=2))
    with open(folder / "evals.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "mean_return", "std_return", "episode_returns"])
        for step, score in zip(steps, scores):
            writer.writerow([step, f"{score:.4f}", "1.0000", f"{score - 1:g};{score + 1:g}"])
    return folder


def curve_with_mean(mean):
    """Four evaluation scores whose mean is exactly `mean`."""
    return [mean - 3, mean - 1, mean + 1, mean + 3]


@pytest.fixture
def synthetic_runs(tmp_path):
    """The RUN_MEANS runs in two trees (one given as a folder of folders, one as a single run folder), plus files
    that must be ignored. Returns the --runs arguments."""
    tree_a, tree_b = tmp_path / "a" / "runs", tmp_path / "b"
    direct = None
    for game, variants in RUN_MEANS.items():
        for variant, means in variants.items():
            for seed, mean in enumerate(means, start=1):
                root = tree_b / "nested" if variant == "CWCA" else tree_a
                folder = write_run(root, game, variant, seed, curve_with_mean(mean))
                if (game, variant, seed) == ("Pong", "NA", 1):
                    # evaluations a resumed run superseded, and an --eval-only result: never part of the curve
                    (folder / "evals.superseded.csv").write_text("5000,99999.0,0.0,99999\n")
                    (folder / "eval_only_BreakoutInfinite_step_000004000_1ep.csv").write_text(
                        "episode,env,return,length\n0,0,88888,1000\n"
                    )
                if (game, variant) == ("BreakoutInfinite", "NA"):
                    direct = folder
    (tmp_path / "a" / "notes").mkdir()
    (tmp_path / "a" / "notes" / "evals.csv").write_text("not a run folder: no args.json\n")
    return [tmp_path / "a", tree_b, direct]


def all_runs(paths):
    return [results.read_run_dir(d) for d in results.find_run_dirs(paths)]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def hand_normalised(game, score):
    random_score, human_score = REFERENCES[game]
    return (score - random_score) / (human_score - random_score)


# ---------------------------------------------------------------------------------------------------------------
# data modules


def test_reference_scores_are_the_57_games_with_the_published_numbers():
    assert len(RANDOM_HUMAN_SCORES) == 57
    for game, (random_score, human_score) in REFERENCES.items():
        assert RANDOM_HUMAN_SCORES[game] == (random_score, human_score)
    # more spot checks against DQN Zoo's table, envpool names
    assert RANDOM_HUMAN_SCORES["MsPacman"] == (307.3, 6951.6)
    assert RANDOM_HUMAN_SCORES["SpaceInvaders"] == (148.0, 1668.7)
    assert RANDOM_HUMAN_SCORES["MontezumaRevenge"] == (0.0, 4753.3)
    assert RANDOM_HUMAN_SCORES["Skiing"] == (-17098.1, -4336.9)
    assert RANDOM_HUMAN_SCORES["Surround"] == (-10.0, 6.5)
    assert RANDOM_HUMAN_SCORES["VideoPinball"] == (16256.9, 17667.9)
    assert all(human > random for random, human in RANDOM_HUMAN_SCORES.values())
    assert human_normalised_score("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalised_score("Pong", -20.7) == pytest.approx(0.0)
    assert human_normalised_score("Breakout", 30.5 + 28.8) == pytest.approx(2.0)
    with pytest.raises(KeyError):
        human_normalised_score("BreakoutInfinite", 10.0)


def test_game_axes_are_the_papers_classification():
    assert len(HORIZONTAL) == 12 and len(VERTICAL) == 18 and len(OTHER) == 26
    assert {kind: len(games) for kind, games in OTHER_KINDS.items()} == {
        "no main axis": 5,
        "far off horizontal/vertical": 5,
        "multiple axes": 16,
    }
    every = HORIZONTAL + VERTICAL + OTHER
    assert len(set(every)) == 56  # disjoint
    assert set(every) | {"Surround"} == set(RANDOM_HUMAN_SCORES)  # the paper's 56 games = Atari-57 minus Surround
    assert axis_class("Pong") == "horizontal" and axis_class("Breakout") == "vertical"
    assert axis_class("Hero") == "other" and axis_class("BreakoutInfinite") is None
    assert set(AXIS_CLASSES) == {"horizontal", "vertical", "other"}


# ---------------------------------------------------------------------------------------------------------------
# reading runs


@pytest.mark.parametrize("env_id", ["Breakout", "Breakout-v5", "BreakoutNoFrameskip-v4", "ALE/Breakout-v5", "Breakout-v4"])
def test_game_name_normalises_env_ids(env_id):
    assert results.game_name(env_id) == "Breakout"


def test_game_name_keeps_other_names():
    assert results.game_name("BreakoutInfinite") == "BreakoutInfinite"
    assert results.game_name("ALE/MsPacman-v5") == "MsPacman"
    assert results.game_name("SpaceInvadersNoFrameskip-v4") == "SpaceInvaders"


def test_variant_name_from_args():
    """Without exp_name (or with another --exp-name) the script is the one whose architecture fields the args have."""
    assert results.variant_name({"self_attn": "CWCA", "ada_attn": "none"}) == "CWCA"
    assert results.variant_name({"self_attn": "CWCA"}) == "CWCA"
    assert results.variant_name({"self_attn": "SWA", "ada_attn": "alpha_beta", "exp_name": "lr_sweep"}) == "SWA+alpha_beta"
    assert results.variant_name({"arch": "sparse_fls"}) == "sparse_fls"
    with pytest.raises(results.UnknownScriptError):
        results.variant_name({"seed": 1})
    with pytest.raises(results.UnknownScriptError, match="exp_name 'ppo_atari_fls'"):  # no FLS architecture
        results.variant_name({"exp_name": "ppo_atari_fls", "arch": "NA"})


def literal_choices(args_class):
    """{field: its values} for the Literal-typed fields of a script's Args."""
    hints = typing.get_type_hints(args_class)
    return {name: typing.get_args(hint) for name, hint in hints.items() if typing.get_origin(hint) is typing.Literal}


@pytest.mark.parametrize("script_path", sorted(REPO.glob("ppo_atari_*.py")), ids=lambda path: path.stem)
def test_results_names_runs_of_every_script_as_the_script_does(script_path):
    """For each training script found in the repository, from the args.json it writes (defaults, and every value of
    each Literal field in turn), with its exp_name or another: the script's own variant_name."""
    script = importlib.import_module(script_path.stem)
    prefix = results.LABEL_PREFIX.get(script_path.stem, "")
    settings = [{}] + [{name: value} for name, values in literal_choices(script.Args).items() for value in values]
    for setting in settings:
        args = script.Args(**setting)
        config = json.loads(json.dumps(vars(args), default=str))  # as args.json holds them
        assert config["exp_name"] == script_path.stem
        assert results.variant_name(config) == prefix + script.variant_name(args), setting
        assert results.variant_name({**config, "exp_name": "my_sweep"}) == prefix + script.variant_name(args), setting


TOY_SCRIPTS = {
    # a top-down script after the temporal agents were split out of it, the temporal script, and a file that is no
    # training script
    "ppo_atari_zz_mott": """
import os
from dataclasses import dataclass
from typing import Literal

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    seed: int = 1
    query_mode: Literal["topdown", "fixed"] = "topdown"

def variant_name(args: Args) -> str:
    return args.query_mode
""",
    "ppo_atari_zz_temporal": """
import os
from dataclasses import dataclass
from typing import Literal


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    seed: int = 1
    arch: Literal["adaptive", "spatiotemporal"] = "adaptive"
    query_mode: Literal["topdown", "fixed"] = "topdown"
    adaptive_span: bool = False

def variant_name(args: Args) -> str:
    query = f"_{args.query_mode}" if args.arch == "spatiotemporal" and args.query_mode != "topdown" else ""
    return f"{args.arch}{query}{'_span' if args.adaptive_span else ''}"
""",
    "ppo_atari_zz_notes": "NOTES = 'not a training script'\n",
}


def test_scripts_are_found_in_the_folder_and_a_split_scripts_old_runs_go_to_the_new_one(tmp_path, monkeypatch):
    """Scripts are discovered, not listed: runs of the top-down script from before the split (exp_name of the old
    script, `arch` the temporal script's) are named by the script that now has their architecture."""
    for name, text in TOY_SCRIPTS.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    scripts = results.training_scripts(tmp_path)
    assert [script.name for script in scripts] == ["ppo_atari_zz_mott", "ppo_atari_zz_temporal"]

    def name(**config):
        return results.variant_name(config, scripts)

    old = "ppo_atari_zz_mott"
    assert name(exp_name=old, query_mode="fixed") == "fixed"
    assert name(exp_name=old, query_mode="fixed", arch="mott", adaptive_span=False) == "fixed"  # before the split
    assert name(exp_name=old, query_mode="topdown", arch="adaptive", adaptive_span=True) == "adaptive_span"
    assert name(exp_name=old, query_mode="fixed", arch="spatiotemporal", adaptive_span=False) == "spatiotemporal_fixed"
    assert name(exp_name="ppo_atari_zz_temporal", query_mode="fixed", arch="spatiotemporal") == "spatiotemporal_fixed"
    assert name(exp_name=old) == "topdown"  # args from before a field existed: the script's default
    assert name(exp_name="sweep", query_mode="fixed") == "fixed"
    assert name(exp_name="sweep", arch="adaptive", query_mode="topdown") == "adaptive"
    with pytest.raises(results.UnknownScriptError, match="ppo_atari_zz_mott, ppo_atari_zz_temporal"):
        name(exp_name="sweep", seed=1)
    with pytest.raises(results.UnknownScriptError):
        name(exp_name="sweep", arch="mott_v2")  # no script has this architecture


def test_runs_of_no_known_script_are_skipped_with_a_note(tmp_path, capsys):
    known = write_run(tmp_path / "runs", "Pong", "CWCA", 1, [1, 2, 3, 4])
    other = tmp_path / "runs" / "Pong__ppo_atari_envpool__1__1"
    other.mkdir()
    (other / "args.json").write_text(json.dumps({"exp_name": "ppo_atari_envpool", "seed": 1, "env_id": "Pong-v5"}))
    (other / "evals.csv").write_text("global_step,mean_return,std_return,episode_returns\n1000,-20.0,0.0,-20\n")
    runs = results.read_run_dirs([tmp_path / "runs"])
    assert [(run.source, run.variant) for run in runs] == [(str(known), "CWCA")]
    notes = capsys.readouterr().out.strip().splitlines()
    assert len(notes) == 1 and other.name in notes[0] and "ppo_atari_envpool" in notes[0] and notes[0].endswith("skipped")
    with pytest.raises(SystemExit, match="no run of a known training script"):
        results.main(results.Args(out=tmp_path / "out", runs=(other,)))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "query_mode, arch, span, expected",
    [
        ("topdown", None, None, "topdown"),
        ("fixed", None, None, "fixed"),
        ("l2norm", None, None, "l2norm"),  # before `arch` existed
        ("topdown", "mott", False, "topdown"),
        ("fixed", "mott", False, "fixed"),
        ("l2norm", "mott", False, "l2norm"),
        ("topdown", "adaptive", False, "adaptive"),
        ("topdown", "adaptive", True, "adaptive_span"),
        ("topdown", "spatiotemporal", False, "spatiotemporal"),
        ("l2norm", "spatiotemporal", False, "spatiotemporal_l2norm"),
        ("fixed", "spatiotemporal", True, "spatiotemporal_fixed_span"),
    ],
)
def test_variant_name_of_topdown_runs(query_mode, arch, span, expected):
    config = {"exp_name": "ppo_atari_topdown", "query_mode": query_mode, **({} if arch is None else {"arch": arch})}
    if span is not None:
        config["adaptive_span"] = span
    assert results.variant_name(config) == expected


@pytest.mark.parametrize(
    "script, flags",
    [
        ("ppo_atari_topdown", []),
        ("ppo_atari_topdown", ["--query-mode", "fixed"]),
        ("ppo_atari_temporal", ["--arch", "adaptive"]),
        ("ppo_atari_temporal", ["--arch", "adaptive", "--adaptive-span"]),
        ("ppo_atari_temporal", ["--arch", "spatiotemporal", "--query-mode", "l2norm", "--adaptive-span"]),
    ],
)
def test_variant_name_of_topdown_runs_matches_the_script(script, flags):
    """results names a run as the script (the top-down one, or the thesis's temporal one split out of it) names its
    run folder, from the args.json the script writes."""
    import tyro

    module = importlib.import_module(script)
    args = tyro.cli(module.Args, args=flags)
    assert results.variant_name(json.loads(json.dumps(vars(args)))) == module.variant_name(args)


def test_variant_name_of_timesformer_runs_matches_the_script(tmp_path):
    """The TimeSformer's args name no variant: its sizes do, as in the script's run folders."""
    import ppo_atari_timesformer

    args = ppo_atari_timesformer.Args(embed_dim=32, heads=2, depth=3, mlp_ratio=4, patch_size=12)
    config = json.loads(json.dumps(vars(args)))  # as args.json holds them
    assert results.variant_name(config) == "timesformer_" + ppo_atari_timesformer.variant_name(args)
    assert results.variant_name(config) == "timesformer_d32_h2_l3_m4_p12"
    # a field the args lack (a run from before the field existed) takes the script's default, as a checkpoint's args do
    default_patch = ppo_atari_timesformer.Args().patch_size
    assert (
        results.variant_name({"embed_dim": 16, "heads": 1, "depth": 1, "mlp_ratio": 2})
        == f"timesformer_d16_h1_l1_m2_p{default_patch}"
    )


def test_topdown_run_folder_is_named_by_query_mode_and_arch(tmp_path):
    """`query_mode` in the args marks the top-down script, whose `arch` is not an FLS architecture."""
    folder = tmp_path / "Pong__ppo_atari_topdown__spatiotemporal_fixed__2__1"
    folder.mkdir()
    (folder / "args.json").write_text(
        json.dumps(
            {"exp_name": "ppo_atari_topdown", "seed": 2, "env_id": "Pong", "query_mode": "fixed", "arch": "spatiotemporal"}
        )
    )
    (folder / "evals.csv").write_text("global_step,mean_return,std_return,episode_returns\n1000,-20.0,0.0,-20\n")
    run = results.read_run_dir(folder)
    assert (run.game, run.variant, run.seed, run.scores.tolist()) == ("Pong", "spatiotemporal_fixed", 2, [-20.0])


def test_run_folders_are_found_and_side_files_ignored(synthetic_runs):
    run_dirs = results.find_run_dirs(synthetic_runs)
    assert len(run_dirs) == 31  # 5 games x 2 variants x 3 seeds + 1
    runs = all_runs(synthetic_runs)
    pong = [r for r in runs if (r.game, r.variant, r.seed) == ("Pong", "NA", 1)]
    assert len(pong) == 1
    assert pong[0].steps.tolist() == STEPS and pong[0].scores.tolist() == [7, 9, 11, 13]
    assert pong[0].mean_score == 10
    assert {r.game for r in runs} == set(RUN_MEANS)  # PongNoFrameskip-v4, ALE/Boxing-v5, Seaquest-v5 normalised


def test_missing_evals_and_empty_folders_are_errors(tmp_path):
    folder = write_run(tmp_path / "runs", "Pong", "NA", 1, [1, 2, 3, 4])
    (folder / "evals.csv").unlink()
    with pytest.raises(results.ResultsError, match="no evals.csv"):
        results.find_run_dirs([tmp_path / "runs"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(results.ResultsError, match="no run folders"):
        results.find_run_dirs([tmp_path / "empty"])
    with pytest.raises(results.ResultsError, match="nowhere: no such folder"):
        results.find_run_dirs([tmp_path / "nowhere"])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(results.ResultsError, match="a_file: a file, not a folder"):
        results.find_run_dirs([tmp_path / "a_file"])


def test_duplicates_kept_once_and_colliding_variants_renamed(tmp_path, capsys):
    short = write_run(tmp_path / "x", "Pong", "NA", 1, [1, 2])
    long = write_run(tmp_path / "y", "Pong", "NA", 1, [1, 2, 3, 4])
    sweep = write_run(tmp_path / "z", "Pong", "NA", 2, [5, 5, 5, 5], exp_name="lr_sweep")  # same name, other --exp-name
    runs = results.prepare_runs([results.read_run_dir(d) for d in (short, long, sweep)])
    assert sorted((r.variant, r.seed, len(r.scores)) for r in runs) == [
        ("NA (lr_sweep)", 2, 4),
        ("NA (ppo_atari_selfattn)", 1, 4),
    ]
    assert "keeping" in capsys.readouterr().out


class FakeWandbRun:
    def __init__(self, run_id, config, history):
        self.id, self.name, self.config, self._history = run_id, run_id, config, history
        self.scanned_keys = None

    def scan_history(self, keys=None, page_size=1000):
        self.scanned_keys = keys
        return iter([row for row in self._history if all(k in row for k in keys)])


class FakeWandbApi:
    def __init__(self, runs):
        self._runs, self.asked = runs, []

    def runs(self, path, *args, **kwargs):
        self.asked.append(path)
        return self._runs


def test_wandb_adapter_reads_config_and_eval_history(capsys):
    history = [
        {"global_step": 2000, "eval/mean_return": 4.0, "_step": 1},
        {"global_step": 1000, "eval/mean_return": 2.0, "_step": 0},
        {"global_step": 1500, "charts/episodic_return": 9.0},  # another metric's row: not an evaluation
        {"global_step": 3000, "eval/mean_return": None},
    ]  # a null value: not an evaluation
    run = FakeWandbRun(
        "Breakout__ppo_atari_selfattn__CWCA__3__1",
        {
            "env_id": "BreakoutNoFrameskip-v4",
            "seed": 3,
            "exp_name": "ppo_atari_selfattn",
            "self_attn": "CWCA",
            "ada_attn": "alpha",
        },
        history,
    )
    wrapped = FakeWandbRun(
        "w",
        {
            "env_id": {"value": "ALE/Pong-v5"},
            "seed": {"value": 1},
            "arch": {"value": "nature"},
            "exp_name": {"value": "ppo_atari_fls"},
        },
        [{"global_step": 10, "eval/mean_return": -21.0}],
    )
    empty = FakeWandbRun("crashed", {"env_id": "Pong", "seed": 2, "self_attn": "NA"}, [])
    unrelated = FakeWandbRun("sweep-probe", {"env_id": "Pong", "seed": 2}, [{"global_step": 1, "eval/mean_return": 1.0}])
    api = FakeWandbApi([run, wrapped, empty, unrelated])
    runs = results.wandb_runs("me/attention-atari", api=api)
    assert api.asked == ["me/attention-atari"]
    assert run.scanned_keys == ["global_step", "eval/mean_return"]
    assert len(runs) == 2
    first, second = runs
    assert (first.game, first.variant, first.seed, first.exp_name) == ("Breakout", "CWCA+alpha", 3, "ppo_atari_selfattn")
    assert first.steps.tolist() == [1000, 2000] and first.scores.tolist() == [2.0, 4.0] and first.mean_score == 3.0
    assert (second.game, second.variant, second.seed) == ("Pong", "nature", 1)
    notes = capsys.readouterr().out
    assert "crashed" in notes and "sweep-probe" in notes


# ---------------------------------------------------------------------------------------------------------------
# per-game table and alignment


def test_per_game_means_standard_errors_winners_and_wins(synthetic_runs):
    summary = results.per_game_summary(all_runs(synthetic_runs))
    assert set(summary) == set(RUN_MEANS)
    for (game, variant), (mean, se) in EXPECTED_CELLS.items():
        got_mean, got_se, seeds = summary[game][variant]
        assert got_mean == pytest.approx(mean)
        assert math.isnan(got_se) if math.isnan(se) else got_se == pytest.approx(se)
        assert seeds == len(RUN_MEANS[game][variant])
    assert "CWCA" not in summary["BreakoutInfinite"]
    winners = results.game_winners(summary)
    assert {game: sorted(w) for game, w in winners.items()} == {game: sorted(w) for game, w in EXPECTED_WINNERS.items()}
    # NA: Boxing, Breakout + half of Hero; CWCA: Pong, Seaquest + half of Hero; BreakoutInfinite (NA only): nobody
    assert results.win_counts(winners, ["NA", "CWCA"]) == {"NA": 2.5, "CWCA": 2.5}


def test_a_game_some_variant_lacks_has_no_winner():
    summary = {
        "Alien": {"NA": (1.0, 0.1, 3), "CWCA": (0.0, 0.1, 3)},
        "Boxing": {"NA": (5.0, 0.5, 3), "CWCA": (4.0, 0.5, 2)},
        "Breakout": {"NA": (9.0, 1.0, 3)},
        "Pong": {"NA": (1.0, 0.2, 3), "CWCA": (2.0, 0.2, 3)},
    }
    winners = results.game_winners(summary)
    assert winners == {"Alien": ["NA"], "Boxing": ["NA"], "Pong": ["CWCA"]}
    assert results.win_counts(winners, ["NA", "CWCA"]) == {"NA": 2, "CWCA": 1}
    table = results.per_game_markdown(summary, ["NA", "CWCA"])
    assert "| Breakout | 9.00 ± 1.00 | – |" in table  # highest of its row, but not bold
    assert "| Boxing | **5.00 ± 0.50** | 4.00 ± 0.50 |" in table
    assert "| **No. of wins** | 2 | 1 |" in table
    assert "No winner for Breakout" in table and "2 to 3 seeds per cell" in table


def test_runs_ending_at_different_steps_are_noted(capsys):
    finished = results.Run("Pong", "NA", 1, "e", np.array([1000, 2000]), np.array([1.0, 2.0]), "a")
    unfinished = results.Run("Pong", "CWCA", 1, "e", np.array([1000]), np.array([1.0]), "b")
    other = results.Run("Boxing", "NA", 1, "e", np.array([1000, 2000]), np.array([1.0, 2.0]), "c")
    assert results.note_unequal_periods([finished, unfinished, other]) == ["Pong"]
    assert "Pong end at different steps (1,000 to 2,000)" in capsys.readouterr().out


def test_alignment_shares_by_hand(synthetic_runs):
    winners = results.game_winners(results.per_game_summary(all_runs(synthetic_runs)))
    table = {name: (n, shares) for name, n, shares in results.alignment_shares(winners, ["NA", "CWCA"])}
    assert table["horizontal"] == (3, pytest.approx({"NA": 1 / 3, "CWCA": 2 / 3}))  # Boxing | Pong, Seaquest
    assert table["vertical"] == (1, pytest.approx({"NA": 1.0, "CWCA": 0.0}))  # Breakout
    assert table["other"] == (1, pytest.approx({"NA": 0.5, "CWCA": 0.5}))  # Hero, a tie
    assert table["other: no main axis"] == (1, pytest.approx({"NA": 0.5, "CWCA": 0.5}))
    assert "other: multiple axes" not in table


# ---------------------------------------------------------------------------------------------------------------
# aggregates


def test_aggregate_metrics_of_a_known_set():
    scores = np.array([[0.0, 1.0, 2.0, 10.0], [3.0, 4.0, 5.0, 100.0]])
    iqm, median, mean, gap = results.aggregate_metrics(scores)
    assert iqm == pytest.approx((2 + 3 + 4 + 5) / 4)  # the middle half of 0, 1, 2, 3, 4, 5, 10, 100
    # rliable's median and mean are over the per-game means across runs: 1.5, 2.5, 3.5, 55
    assert median == pytest.approx((2.5 + 3.5) / 2)
    assert mean == pytest.approx((1.5 + 2.5 + 3.5 + 55) / 4)
    assert gap == pytest.approx(1 - (0 + 1 * 7) / 8)  # scores clipped at 1


def test_normalised_scores_and_aggregates_by_hand(synthetic_runs, capsys):
    runs = results.prepare_runs(all_runs(synthetic_runs))
    matrices, games = results.normalised_score_matrices(runs, ["NA", "CWCA"])
    assert "BreakoutInfinite" in capsys.readouterr().out
    assert games == ["Boxing", "Breakout", "Hero", "Pong", "Seaquest"]
    for variant in ("NA", "CWCA"):
        expected = np.array([[hand_normalised(game, RUN_MEANS[game][variant][seed]) for game in games] for seed in range(3)])
        np.testing.assert_allclose(matrices[variant], expected)
    na = sorted(hand_normalised(game, m) for game in games for m in RUN_MEANS[game]["NA"])  # 15 values
    # per-game means over the 3 runs (normalisation is linear: the normalised mean run score)
    na_game_means = sorted(hand_normalised(game, sum(RUN_MEANS[game]["NA"]) / 3) for game in games)
    points, intervals = results.aggregate_estimates(matrices, reps=200, seed=0)
    iqm, median, mean, gap = points["NA"]
    assert iqm == pytest.approx(sum(na[3:12]) / 9)  # 25% trimmed: 3 of 15 off each end
    assert median == pytest.approx(na_game_means[2])  # median of the 5 per-game means
    assert mean == pytest.approx(sum(na) / 15)
    assert gap == pytest.approx(1 - sum(min(v, 1.0) for v in na) / 15)
    for variant in ("NA", "CWCA"):
        low, high = intervals[variant]
        assert np.all(low <= points[variant] + 1e-12) and np.all(points[variant] <= high + 1e-12)
    again = results.aggregate_estimates(matrices, reps=200, seed=0)[1]
    np.testing.assert_array_equal(again["NA"], intervals["NA"])  # fixed seed: same CIs


def test_unequal_seed_counts_use_the_common_lowest_seeds(tmp_path, capsys):
    runs = [
        results.read_run_dir(write_run(tmp_path, "Pong", "NA", seed, curve_with_mean(m)))
        for seed, m in [(1, 0), (2, 10), (3, 5)]
    ]
    runs += [
        results.read_run_dir(write_run(tmp_path, "Breakout", "NA", seed, curve_with_mean(m))) for seed, m in [(7, 20), (2, 30)]
    ]
    runs += [results.read_run_dir(write_run(tmp_path, "Hero", "NA", 1, curve_with_mean(5000)))]
    runs += [results.read_run_dir(write_run(tmp_path, "Pong", "CWCA", 1, curve_with_mean(1)))]
    runs += [results.read_run_dir(write_run(tmp_path, "Breakout", "CWCA", 1, curve_with_mean(1)))]
    matrices, games = results.normalised_score_matrices(runs, ["NA", "CWCA"])
    out = capsys.readouterr().out
    assert games == ["Breakout", "Pong"] and "Hero" in out  # Hero: no CWCA run
    expected = [
        [hand_normalised("Breakout", 30), hand_normalised("Pong", 0)],  # seed 2 / seed 1
        [hand_normalised("Breakout", 20), hand_normalised("Pong", 10)],
    ]  # seed 7 / seed 2
    np.testing.assert_allclose(matrices["NA"], expected)
    assert matrices["CWCA"].shape == (1, 2)


def test_probability_of_improvement_dominance_is_one():
    rng = np.random.default_rng(0)
    better, worse = 10 + rng.random((3, 4)), rng.random((5, 4))
    points, intervals = results.probabilities_of_improvement({"A": better, "B": worse}, reps=100)
    assert points == {"A,B": 1.0}
    np.testing.assert_allclose(intervals["A,B"], [1.0, 1.0])
    points, _ = results.probabilities_of_improvement({"B": worse, "A": better}, reps=100)
    assert points == {"B,A": 0.0}


def test_probability_of_improvement_by_hand(synthetic_runs):
    runs = results.prepare_runs(all_runs(synthetic_runs))
    matrices, _ = results.normalised_score_matrices(runs, ["NA", "CWCA"])
    points, _ = results.probabilities_of_improvement(matrices, reps=100)
    # P(NA > CWCA) per game over the 3 x 3 pairs of runs (ties 1/2): Boxing 1, Breakout 8.5/9 (40 vs 40 ties),
    # Hero 1/2 (identical), Pong 0, Seaquest 0.5/9 (300 vs 300 ties) -> mean 2.5 / 5
    assert points["NA,CWCA"] == pytest.approx((1 + 8.5 / 9 + 0.5 + 0 + 0.5 / 9) / 5)
    assert points["NA,CWCA"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------------
# learning curves


def test_debiased_ema_of_a_short_sequence():
    w = 0.98
    s1 = (1 - w) * 1
    s2 = w * s1 + (1 - w) * 2
    s3 = w * s2 + (1 - w) * 3
    expected = [s1 / (1 - w), s2 / (1 - w**2), s3 / (1 - w**3)]
    np.testing.assert_allclose(results.debiased_ema([1, 2, 3]), expected)
    np.testing.assert_allclose(expected, [1.0, 0.0596 / 0.0396, 0.118408 / 0.058808])  # the arithmetic, written out
    np.testing.assert_allclose(results.debiased_ema([5.0, 5.0, 5.0]), [5.0, 5.0, 5.0])  # no bias towards 0
    assert results.EMA_WEIGHT == 0.98


def test_learning_curve_aligns_seeds_and_bands_by_hand(tmp_path):
    a = results.Run("Pong", "NA", 1, "e", np.array([0, 10, 20, 30]), np.array([0.0, 10, 20, 30]), "a")
    b = results.Run("Pong", "NA", 2, "e", np.array([0, 20, 40]), np.array([4.0, 8, 12]), "b")
    steps, mean, half_width = results.learning_curve([a, b], weight=0.0)  # weight 0: no smoothing
    # grid: union of steps inside [0, 30] (what both cover); b interpolated: 6 at 10, 10 at 30
    assert steps.tolist() == [0, 10, 20, 30]
    np.testing.assert_allclose(mean, [2, 8, 14, 20])
    # two seeds: SE = |a - b| / 2; 95% CI with Student's t, 1 degree of freedom (Cauchy): tan(pi * (0.975 - 0.5)) = 12.706
    t1 = math.tan(math.pi * 0.475)
    np.testing.assert_allclose(half_width, t1 * np.array([2, 2, 6, 10]))
    # three seeds at the same steps: t with 2 degrees of freedom has the closed form (2p - 1) / sqrt(2p(1 - p)) = 4.303
    c = results.Run("Pong", "NA", 3, "e", np.array([0, 10, 20, 30]), np.array([3.0, 3, 3, 3]), "c")
    b3 = results.Run("Pong", "NA", 2, "e", np.array([0, 10, 20, 30]), np.array([6.0, 6, 6, 6]), "b")
    steps, mean, half_width = results.learning_curve([a, b3, c], weight=0.0)
    np.testing.assert_allclose(mean, [3, 19 / 3, 29 / 3, 13])
    # at step 0: values 0, 6, 3 -> std 3, SE 3 / sqrt 3
    t2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    assert half_width[0] == pytest.approx(t2 * 3 / SQRT3)
    assert t2 == pytest.approx(4.303, abs=1e-3)
    steps, mean, half_width = results.learning_curve([a], weight=0.0)
    np.testing.assert_allclose(mean, [0, 10, 20, 30])
    assert np.all(np.isnan(half_width))


# ---------------------------------------------------------------------------------------------------------------
# the CLI


def run_cli(*args, pythonpath_first=()):
    """`python -m attention_utils.results ARGS` in the repository; `pythonpath_first`: folders put before it."""
    pythonpath = os.pathsep.join([*pythonpath_first, str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "attention_utils.results", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


OUTPUTS = [
    "sample_efficiency.csv",
    "sample_efficiency.png",
    "eval_only.md",
    "eval_only.csv",
    "length_vs_return_BreakoutInfinite.png",
    "per_game.md",
    "per_game.csv",
    "aggregates.md",
    "aggregates.csv",
    "aggregates.png",
    "performance_profiles.png",
    "probability_of_improvement.csv",
    "probability_of_improvement.png",
    "learning_curves.png",
    "alignment.md",
    "alignment.csv",
]


def test_cli_writes_every_table_and_plot(synthetic_runs, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--runs", *synthetic_runs, "--out", out, "--bootstrap-reps", "100", "--improvement-reps", "100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in [
        "aggregates.png",
        "performance_profiles.png",
        "probability_of_improvement.png",
        "learning_curves.png",
        "sample_efficiency.png",
    ]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "BreakoutInfinite" in proc.stdout  # no reference scores: noted

    per_game = {row["game"]: row for row in read_csv(out / "per_game.csv")}
    for (game, variant), (mean, se) in EXPECTED_CELLS.items():
        assert float(per_game[game][f"{variant}_mean"]) == pytest.approx(mean)
        assert (
            per_game[game][f"{variant}_se"] == ""
            if math.isnan(se)
            else float(per_game[game][f"{variant}_se"]) == pytest.approx(se)
        )
    assert per_game["BreakoutInfinite"]["CWCA_mean"] == "" and per_game["BreakoutInfinite"]["CWCA_seeds"] == "0"
    assert {game: sorted(per_game[game]["winner"].split(";")) for game in EXPECTED_WINNERS} == {
        game: sorted(w) for game, w in EXPECTED_WINNERS.items()
    }
    assert per_game["BreakoutInfinite"]["winner"] == ""
    assert float(per_game["No. of wins"]["NA_mean"]) == 2.5 and float(per_game["No. of wins"]["CWCA_mean"]) == 2.5

    table = (out / "per_game.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert lines["Game"].split("|")[2:4] == [" NA ", " CWCA "]  # the paper's column order
    assert "| 12.00 ± 1.15 | **16.00 ± 0.58** |" in lines["Pong"]
    assert "| **40.00 ± 5.77** | 4.00 ± 1.15 |" in lines["Boxing"]
    assert "| **2000.00 ± 577.35** | **2000.00 ± 577.35** |" in lines["Hero"]
    assert "| 7.00 ± n/a | – |" in lines["BreakoutInfinite"]  # CWCA has no run there: no winner
    assert "| 2.5 | 2.5 |" in lines["**No. of wins**"]
    assert "No winner for BreakoutInfinite" in table

    aggregates = {row["variant"]: row for row in read_csv(out / "aggregates.csv")}
    games = ["Boxing", "Breakout", "Hero", "Pong", "Seaquest"]
    for variant in ("NA", "CWCA"):
        values = sorted(hand_normalised(game, m) for game in games for m in RUN_MEANS[game][variant])
        game_means = sorted(hand_normalised(game, sum(RUN_MEANS[game][variant]) / 3) for game in games)
        row = aggregates[variant]
        assert row["num_games"] == "5" and row["num_runs"] == "3"
        assert float(row["iqm"]) == pytest.approx(sum(values[3:12]) / 9)
        assert float(row["median"]) == pytest.approx(game_means[2])
        assert float(row["mean"]) == pytest.approx(sum(values) / 15)
        assert float(row["optimality_gap"]) == pytest.approx(1 - sum(min(v, 1) for v in values) / 15)
        assert float(row["iqm_ci_low"]) <= float(row["iqm"]) <= float(row["iqm_ci_high"])
    assert "IQM" in (out / "aggregates.md").read_text() and "DQN Zoo" in (out / "aggregates.md").read_text()

    # sample efficiency: at every step each run scores its mean + (-3, -1, 1, 3); IQM over the 15 run x game values
    efficiency = read_csv(out / "sample_efficiency.csv")
    assert [int(row["global_step"]) for row in efficiency if row["variant"] == "NA"] == STEPS
    for row in efficiency:
        offset = [-3, -1, 1, 3][STEPS.index(int(row["global_step"]))]
        values = sorted(hand_normalised(game, m + offset) for game in games for m in RUN_MEANS[game][row["variant"]])
        assert row["metric"] == "IQM" and (row["num_games"], row["num_runs"]) == ("5", "3")
        assert float(row["value"]) == pytest.approx(sum(values[3:12]) / 9)
        assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
    # the eval-only result beside a Pong run (a Pong agent played on BreakoutInfinite) has its own table
    (only,) = read_csv(out / "eval_only.csv")
    assert (only["variant"], only["game"], float(only["mean"]), only["num_episodes"]) == ("NA", "BreakoutInfinite", 88888, "1")

    (improvement,) = read_csv(out / "probability_of_improvement.csv")
    assert (improvement["x"], improvement["y"]) == ("NA", "CWCA")
    assert float(improvement["p_x_better_than_y"]) == pytest.approx(0.5)

    alignment = {row["axis_class"]: row for row in read_csv(out / "alignment.csv")}
    assert float(alignment["horizontal"]["NA"]) == pytest.approx(1 / 3) and float(
        alignment["horizontal"]["CWCA"]
    ) == pytest.approx(2 / 3)
    assert float(alignment["vertical"]["NA"]) == 1.0 and float(alignment["vertical"]["CWCA"]) == 0.0
    assert float(alignment["other"]["NA"]) == 0.5 and alignment["other"]["num_games"] == "1"
    assert "**0.67**" in (out / "alignment.md").read_text()


def test_cli_bad_input_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("--runs", tmp_path / "empty", "--out", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: no run folders") and len(proc.stderr.strip().splitlines()) == 1
    folder = write_run(tmp_path / "runs", "Pong", "NA", 1, [1, 2, 3, 4])
    (folder / "evals.csv").unlink()
    proc = run_cli("--runs", tmp_path / "runs", "--out", tmp_path / "out")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "no evals.csv" in proc.stderr and folder.name in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_cli_reads_a_wandb_project_through_the_public_api(tmp_path):
    """A stand-in `wandb` package first on PYTHONPATH: the CLI's wandb.Api() gets runs from it (no network)."""
    fake = tmp_path / "fake" / "wandb"
    fake.mkdir(parents=True)
    runs = []
    for variant, means in [("NA", [10, 20]), ("CWCA", [30, 40])]:
        for seed, mean in enumerate(means, start=1):
            runs.append(
                {
                    "id": f"Pong__ppo_atari_selfattn__{variant}__{seed}",
                    "config": {
                        "env_id": "Pong",
                        "seed": seed,
                        "exp_name": "ppo_atari_selfattn",
                        "self_attn": variant,
                        "ada_attn": "none",
                    },
                    "history": [
                        {"global_step": s, "eval/mean_return": float(v)} for s, v in zip(STEPS, curve_with_mean(mean))
                    ],
                }
            )
    (fake / "runs.json").write_text(json.dumps(runs))
    (fake / "__init__.py").write_text(
        "import json, os\n"
        "class _Run:\n"
        "    def __init__(self, d):\n"
        "        self.id = self.name = d['id']; self.config = d['config']; self._h = d['history']\n"
        "    def scan_history(self, keys=None, page_size=1000):\n"
        "        return iter([r for r in self._h if all(k in r for k in keys)])\n"
        "class Api:\n"
        "    def runs(self, path):\n"
        "        assert path == 'me/attention-atari', path\n"
        "        return [_Run(d) for d in json.load(open(os.path.join(os.path.dirname(__file__), 'runs.json')))]\n"
    )
    out = tmp_path / "out"
    proc = run_cli(
        "--wandb-project",
        "me/attention-atari",
        "--out",
        out,
        "--bootstrap-reps",
        "50",
        "--improvement-reps",
        "50",
        pythonpath_first=[str(tmp_path / "fake")],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pong, wins = read_csv(out / "per_game.csv")
    assert pong["game"] == "Pong" and wins["game"] == "No. of wins" and float(wins["CWCA_mean"]) == 1.0
    assert float(pong["NA_mean"]) == 15 and float(pong["NA_se"]) == pytest.approx(5.0)  # std 7.07 / sqrt 2
    assert float(pong["CWCA_mean"]) == 35 and pong["winner"] == "CWCA"
    assert (out / "learning_curves.png").is_file() and (out / "aggregates.csv").is_file()


# ---------------------------------------------------------------------------------------------------------------
# sample efficiency


def test_sample_efficiency_by_hand(tmp_path, capsys):
    """Two games, four seeds; seed 4 evaluated at 1000 and 3000 only (interpolated at 2000). IQM per step of the
    8 run x game values: the 25% trimmed mean drops 2 from each end; Mean: mean of the per-game means."""
    pong = {1: [-20.7, -20.7, -20.7], 2: [14.6, 14.6, 14.6], 3: [-3.05, 0, 14.6], 4: [-20.7, 14.6]}
    breakout = {1: [1.7, 30.5, 30.5], 2: [30.5, 30.5, 30.5], 3: [16.1, 16.1, 59.3], 4: [1.7, 30.5]}
    runs = []
    for seed in (1, 2, 3, 4):
        steps = [1000, 3000] if seed == 4 else [1000, 2000, 3000]
        runs.append(results.read_run_dir(write_run(tmp_path, "Pong", "CWCA", seed, pong[seed], steps=steps)))
        runs.append(results.read_run_dir(write_run(tmp_path, "Breakout", "CWCA", seed, breakout[seed], steps=steps)))
    selection, games = results.aggregate_selection(runs, ["CWCA"])
    curves = results.normalised_curves(selection, games)
    steps, scores = curves["CWCA"]
    assert games == ["Breakout", "Pong"] and steps.tolist() == [1000, 2000, 3000]
    assert scores.shape == (4, 2, 3)  # (runs, games, steps)
    # human-normalised by hand (Pong: random -20.7, human 14.6; Breakout: 1.7, 30.5); seed 4 at 2000: halfway
    np.testing.assert_allclose(scores[:, 1, 1], [0, 1, (20.7 / 35.3), 0.5])  # Pong, step 2000
    np.testing.assert_allclose(scores[:, 0, 2], [1, 1, 2, 1])  # Breakout, step 3000 (59.3 - 1.7 = 2 x 28.8)
    efficiency = results.sample_efficiency(curves, "IQM", reps=50, seed=0)
    _, iqm, interval = efficiency["CWCA"]
    # step 1000: values 0, 1, 0.5, 0 (Pong) and 0, 1, 0.5, 0 (Breakout) -> sorted 0 0 0 0 .5 .5 1 1 -> middle 4: 0, 0, .5, .5
    # step 3000: Pong 0, 1, 1, 1; Breakout 1, 1, 2, 1 -> sorted 0 1 1 1 1 1 1 2 -> middle four all 1
    assert iqm[0] == pytest.approx(0.25) and iqm[2] == pytest.approx(1.0)
    assert np.all(interval[0] <= iqm + 1e-12) and np.all(iqm <= interval[1] + 1e-12)
    mean = results.sample_efficiency(curves, "Mean", reps=20)["CWCA"][1]
    assert mean[2] == pytest.approx(((0 + 1 + 1 + 1) / 4 + (1 + 1 + 2 + 1) / 4) / 2)
    median = results.sample_efficiency(curves, "Median", reps=20)["CWCA"][1]
    assert median[2] == pytest.approx(mean[2])  # two games: the median of two per-game means is their mean
    again = results.sample_efficiency(curves, "IQM", reps=50, seed=0)["CWCA"][2]
    np.testing.assert_array_equal(again, interval)  # fixed seed: same CIs


def test_per_step_aggregate_is_rliables_at_every_step():
    from rliable import metrics

    scores = np.random.default_rng(3).normal(size=(5, 7, 6))  # (runs, games, steps)
    for name, metric in [
        ("IQM", metrics.aggregate_iqm),
        ("Median", metrics.aggregate_median),
        ("Mean", metrics.aggregate_mean),
    ]:
        expected = [metric(scores[..., step]) for step in range(6)]
        np.testing.assert_allclose(results.per_step_aggregate(scores, name), expected)


def test_sample_efficiency_cli_option_and_earlier_outputs_replaced_with_a_note(tmp_path):
    for seed, (pong, breakout) in enumerate([([-20.7, 14.6], [1.7, 30.5]), ([14.6, 14.6], [30.5, 59.3])], start=1):
        write_run(tmp_path / "runs", "Pong", "NA", seed, pong, steps=[1000, 2000])
        write_run(tmp_path / "runs", "Breakout", "NA", seed, breakout, steps=[1000, 2000])
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_game.md").write_text("an earlier table")
    (out / "notes.txt").write_text("not a result")
    proc = run_cli("--runs", tmp_path / "runs", "--out", out, "--bootstrap-reps", "20", "--efficiency-metric", "Mean")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_csv(out / "sample_efficiency.csv")
    assert [(row["metric"], int(row["global_step"])) for row in rows] == [("Mean", 1000), ("Mean", 2000)]
    # step 2000: Pong 1, 1; Breakout 1, 2 -> per-game means 1 and 1.5 -> 1.25
    assert float(rows[1]["value"]) == pytest.approx(1.25)
    assert (out / "sample_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing is replaced silently; files that are no result stay
    assert f"note: {out} already holds 1 result file(s) (per_game.md)" in proc.stdout
    assert "an earlier table" not in (out / "per_game.md").read_text()
    assert (out / "notes.txt").read_text() == "not a result"


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line naming the problem (file and line where there is one), exit != 0, nothing written


def bad_run(root, evals=None, args_json=None):
    """A run folder whose evals.csv / args.json text is replaced where given."""
    folder = write_run(root, "Pong", "NA", 1, [1, 2, 3, 4])
    if evals is not None:
        (folder / "evals.csv").write_text(evals)
    if args_json is not None:
        (folder / "args.json").write_text(args_json)
    return folder


def evals_is_a_folder(root):
    folder = write_run(root, "Pong", "NA", 1, [1, 2, 3, 4])
    (folder / "evals.csv").unlink()
    (folder / "evals.csv").mkdir()
    return folder


def args_is_a_folder(root):
    folder = write_run(root, "Pong", "NA", 1, [1, 2, 3, 4])
    (folder / "args.json").unlink()
    (folder / "args.json").mkdir()
    return folder


HEADER = "global_step,mean_return,std_return,episode_returns\n"
BAD_RUNS = {  # case: (make the run folder, what the message says)
    "evals_bad_number": (
        lambda r: bad_run(r, evals=HEADER + "1000,1.0,0,1\n2000,abc,0,1\n"),
        "evals.csv line 3: mean_return 'abc' is not a finite number",
    ),
    "evals_nan": (
        lambda r: bad_run(r, evals=HEADER + "1000,nan,0,1\n"),
        "evals.csv line 2: mean_return 'nan' is not a finite",
    ),
    "evals_negative_step": (
        lambda r: bad_run(r, evals=HEADER + "-5,1.0,0,1\n"),
        "evals.csv line 2: global_step '-5' is not a whole number >= 0",
    ),
    "evals_short_row": (
        lambda r: bad_run(r, evals=HEADER + "1000,1.0,0,1\n2000\n"),
        "evals.csv line 3: 1 field(s), no mean_return",
    ),
    "evals_no_column": (
        lambda r: bad_run(r, evals="step,return\n1000,1.0\n"),
        "evals.csv line 1: header 'step,return' has no global_step, mean_return column",
    ),
    "evals_empty": (lambda r: bad_run(r, evals=""), "evals.csv line 1: empty file"),
    "evals_nul": (
        lambda r: bad_run(r, evals=HEADER + "1000,1.0,0,1\n20\x0000\n"),  # a NUL byte: a write cut off by a crash
        "evals.csv line 3: global_step '20\\x0000' is not a whole number",
    ),
    "evals_huge_field": (
        lambda r: bad_run(r, evals=HEADER + "1000,1.0,0,1\n2000,1.0,0," + "1;" * 100_000 + "\n"),
        "evals.csv line 3: not CSV (field larger than field limit",
    ),
    "evals_folder": (evals_is_a_folder, "evals.csv is a folder, not a file"),
    "args_bad_json": (
        lambda r: bad_run(r, args_json='{\n  "seed": 1,\n  "env_id": Pong\n}'),
        "args.json line 3 column 13: not valid JSON",
    ),
    "args_list": (lambda r: bad_run(r, args_json="[1, 2]"), "args.json line 1: an array, not an object"),
    "args_empty": (lambda r: bad_run(r, args_json=""), "args.json line 1 column 1: not valid JSON"),
    "args_folder": (args_is_a_folder, "args.json is a folder, not a file"),
    "args_bad_seed": (
        lambda r: bad_run(r, args_json='{"seed": "one", "env_id": "Pong", "self_attn": "NA"}'),
        "seed 'one' in the run's args",
    ),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_malformed_run_files_are_named_by_path_and_line(tmp_path, case):
    make, expected = BAD_RUNS[case]
    folder = make(tmp_path / "runs")
    with pytest.raises(SystemExit) as error:
        results.main(results.Args(out=tmp_path / "out", runs=(tmp_path / "runs",)))
    message = str(error.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert expected in message and str(folder) in message, message
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_bad_options_and_paths_are_refused_before_any_work(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "Pong", "NA", 1, [1, 2, 3, 4])
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [
        (dict(runs=(runs,), bootstrap_reps=0), "--bootstrap-reps 0: give at least 1 replication"),
        (dict(runs=(runs,), improvement_reps=-3), "--improvement-reps -3: give at least 1 replication"),
        (dict(runs=(runs,), seed=-1), "--seed -1: numpy's random state takes 0 to 2**32 - 1"),
        (dict(runs=(runs,), seed=2**32), "--seed 4294967296"),
        (dict(runs=(runs,), efficiency_metric="Max"), "--efficiency-metric Max: give one of IQM, Median, Mean"),
        (dict(runs=(tmp_path / "a_file",)), "a_file: a file, not a folder; give the run folder that holds it"),
        (dict(runs=(tmp_path / "nowhere",)), "nowhere: no such folder"),
        (dict(runs=(tmp_path / "empty",)), "no run folders (args.json + evals.csv) and no eval_only_*.csv in"),
        (dict(runs=(runs,), out=tmp_path / "a_file"), "--out " + str(tmp_path / "a_file") + ": a file, not a folder"),
        (dict(runs=(runs,), out=tmp_path / "a_file" / "out"), "a_file is a file, so the folder cannot be made"),
    ]
    for options, expected in cases:
        options.setdefault("out", tmp_path / "out")
        with pytest.raises(SystemExit) as error:
            results.main(results.Args(**options))
        message = str(error.value.code)
        assert message.startswith("error: ") and "\n" not in message and expected in message, (options, message)
    assert not (tmp_path / "out").exists()


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    folder = bad_run(tmp_path / "runs", evals=HEADER + "1000,1.0,0,1\n2000,12.5.1,0,1\n")
    proc = run_cli("--runs", tmp_path / "runs", "--out", tmp_path / "out")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: {folder / 'evals.csv'} line 3: mean_return '12.5.1' is not a finite number"
    ]
    proc = run_cli("--runs", tmp_path / "runs", "--out", tmp_path / "out", "--seed", "-1")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
