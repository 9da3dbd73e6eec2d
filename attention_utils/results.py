"""The result tables and plots of "Results & Analysis" in *Revisiting Self-Attention in Deep RL: A Dimensional
Perspective*, from many runs, and (attention_utils.evaluations) the evaluation tables of *Free-Lunch Saliency via
Attention in Atari Agents* from their --eval-only results.

    python -m attention_utils.results --runs runs/ [more/ ...] --out results/ [--wandb-project entity/project]

Input: run folders of the training scripts, ppo_atari_*.py (`args.json` + `evals.csv`;
`--runs` takes run folders or folders holding them, searched recursively; `evals.superseded.csv` is ignored;
`eval_only_*.csv` go to attention_utils.evaluations) and/or the runs of a wandb project (`eval/mean_return` against
`global_step`, config = args.json). Runs are grouped by (game, variant) across seeds. Every input is read and
checked before anything is written: bad input ends the command with one `error: ...` line naming the file and line.

Outputs in --out:
- per_game.md / per_game.csv: per game and variant, the mean over seeds of each run's mean evaluation score over
  the whole evaluation period, ± standard error across seeds (ddof=1; "n/a" with one seed); winner in bold,
  "No. of wins" row.
- aggregates.md / .csv / .png: human-normalised IQM, median, mean and optimality gap with stratified-bootstrap
  95% CIs (rliable); performance_profiles.png / .csv; probability_of_improvement.csv / .png for every pair.
- sample_efficiency.png / .csv: the aggregate (IQM; --efficiency-metric) of the human-normalised evaluation scores
  of all runs and games at each evaluation step, 95% stratified-bootstrap CIs (rliable), a line per variant.
- learning_curves.png: per game, debiased EMA (weight 0.98) of each seed's curve, mean over seeds ± 95% CI
  (Student's t).
- eval_only.md / .csv, length_vs_return_<game>.png: see attention_utils.evaluations.
- alignment.md / .csv: per axis class of the paper's game classification, the share of its games won by each variant.

Rules (a note is printed whenever runs are dropped, merged or renamed or a game is left out):
- Variant: the variant_name of the script that wrote the run (each script's own run-folder name; script_of tells
  the script from the args). Runs of no training script found here are skipped. A variant name used by two
  experiments (exp_name) becomes "variant (exp_name)".
- Same (experiment, game, variant, seed) twice (e.g. local folder and wandb run): the run with more evaluations is kept.
- Seeds: every run found counts; cells may have different seed counts (per_game.csv gives each cell's count).
- Winners: only games every variant has runs on are judged (a game some variant lacks shows its numbers, no bold,
  no win). Exact ties for a game's best mean: all tied variants are bold; each gets 1/k of the win (No. of wins and
  alignment shares).
- Aggregates: the per-run score is the run's mean evaluation score over the whole evaluation period, human-normalised
  with attention_utils.atari_scores. Games without reference scores, and games that some variant lacks, are left out.
  rliable needs the same number of runs on every game for a variant: each variant keeps, on every game, its
  n lowest seeds, n = its smallest seed count over the games.
- Sample efficiency: the aggregates' games and seeds; each run's raw scores interpolated onto the union of its variant's
  evaluation steps inside the range all of them cover.
- Learning curves: each seed's curve is smoothed over its own evaluations, then the seeds are put on one step grid:
  the union of their steps inside the range all seeds cover, by linear interpolation (exact when all seeds evaluated
  at the same steps). Band: mean ± t(0.975, n-1) SE across the n seeds (none with one seed).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import re
import sys
import types
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal, Optional

import numpy as np

from attention_utils.atari_scores import RANDOM_HUMAN_SCORES, human_normalised_score
from attention_utils.atari_scores import SOURCE as REFERENCE_SOURCE
from attention_utils.game_axes import AXIS_CLASSES, OTHER_KINDS
from attention_utils.runs import atomic_open, save_figure, write_text

EMA_WEIGHT = 0.98
# the self-attention paper's column order, then the FLS paper's Table 3 row order; other variants follow by name
KNOWN_VARIANT_ORDER = (
    "NA", "SWA", "CWRA", "CWCA", "CWRCA",
    "nature", "daqn", "rsppo", "rsppo_nopad", "sparse_fls", "sparse_fls_pool", "sparse_fls_norm", "sparse_fls_1x1",
    "sparse_fls_sp2", "sparse_fls_norelu", "sparse_fls_norelu_pool", "sparse_fls_h1", "sparse_fls_x3", "dense_fls",
    "dense_fls_norelu",
)  # fmt: skip
METRIC_NAMES = ("IQM", "Median", "Mean", "Optimality gap")
EFFICIENCY_METRICS = ("IQM", "Median", "Mean")  # the aggregates a sample-efficiency curve can show
EVALS_FILE, ARGS_FILE = "evals.csv", "args.json"


class ResultsError(Exception):
    """Bad input; the CLI prints it as one `error: ...` line."""


@dataclass
class Run:
    """One training run: what it is and its evaluation curve."""

    game: str
    variant: str
    seed: int
    exp_name: str
    steps: np.ndarray  # global_step of each evaluation, increasing
    scores: np.ndarray  # mean evaluation return at each of those steps
    source: str  # run folder or wandb run path

    @property
    def mean_score(self) -> float:
        """The mean evaluation score over the whole evaluation period."""
        return float(np.mean(self.scores))


# ---------------------------------------------------------------------------------------------------------------
# reading runs

_ENV_ID = re.compile(r"^(?:ALE/)?(?P<game>.+?)(?:NoFrameskip-v[04]|-v[045])?$")


def game_name(env_id: str) -> str:
    """`Pong`, `Pong-v5`, `PongNoFrameskip-v4`, `ALE/Pong-v5` -> `Pong` (as the scripts' parse_game, without envpool)."""
    return _ENV_ID.match(env_id.strip()).group("game")


# the TimeSformer's variant names are its sizes only (d16_h1_l1_m2_p12): the tables say which model they are
LABEL_PREFIX = {"ppo_atari_timesformer": "timesformer_"}


class UnknownScriptError(ResultsError):
    """A run whose training script cannot be told from its args: skipped with a note."""


@dataclass
class TrainingScript:
    """A training script (`ppo_atari_*.py`), imported as a module, and what its `Args` accept."""

    name: str
    module: ModuleType
    fields: frozenset
    choices: dict  # field -> its allowed values, for the Literal-typed fields


def _literal_choices(annotation) -> Optional[set]:
    """The values a Literal (or Optional Literal) annotation allows; None for any other type."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [_literal_choices(arg) if arg is not type(None) else {None} for arg in typing.get_args(annotation)]
        return set().union(*members) if all(m is not None for m in members) else None
    return None


@functools.lru_cache(maxsize=None)
def training_scripts(folder: Optional[Path] = None) -> tuple[TrainingScript, ...]:
    """Every `ppo_atari_*.py` in `folder` (default: the repository), imported with
    attention_utils.checkpoints.import_script (importing a script runs nothing). Its folder must be on sys.path."""
    from attention_utils.checkpoints import REPO, import_script

    scripts = []
    for path in sorted(Path(folder or REPO).glob("ppo_atari_*.py")):
        try:
            module = import_script(str(path))
            if not (
                dataclasses.is_dataclass(getattr(module, "Args", None)) and callable(getattr(module, "variant_name", None))
            ):
                continue  # not a training script
            hints = typing.get_type_hints(module.Args)
        except (Exception, SystemExit) as e:
            raise ResultsError(f"cannot import {path.name} to name its runs ({type(e).__name__}: {e})") from None
        choices = {f.name: _literal_choices(hints.get(f.name)) for f in dataclasses.fields(module.Args)}
        scripts.append(
            TrainingScript(
                path.stem, module, frozenset(choices), {name: values for name, values in choices.items() if values is not None}
            )
        )
    return tuple(scripts)


class _RecordReads:
    """Passes attribute reads on to `args` and records their names."""

    def __init__(self, args):
        self._args, self.read = args, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._args, name)


def _script_name_of(script: TrainingScript, config: dict) -> Optional[tuple[str, set]]:
    """The script's variant_name of its Args built from the config's known fields (its defaults for the others), and
    the fields variant_name read (the architecture fields); None if its Args cannot be built from the config."""
    try:
        args = _RecordReads(script.module.Args(**{k: v for k, v in config.items() if k in script.fields}))
        return str(script.module.variant_name(args)), args.read & script.fields
    except Exception:
        return None


def script_of(config: dict, scripts=None) -> tuple[TrainingScript, str]:
    """The training script that wrote a run's args (args.json or wandb config) and its variant name for them.

    A script's architecture fields are the fields its variant_name reads. The config's architecture fields (those of
    any script) must be valid for the script: values its Args allow (Literal fields), and no field it lacks that
    another script, valid for the config, reads (a run of a script since split in two: `--arch adaptive` in a
    top-down run's args is the temporal script's). Among the valid scripts: the one named by `exp_name` (by default
    the script's file name), else the only one whose architecture fields the config has (runs with another
    --exp-name). Raises UnknownScriptError when there is none."""
    scripts = training_scripts() if scripts is None else scripts
    named = {script.name: _script_name_of(script, config) for script in scripts}
    reads = {name: result[1] & set(config) for name, result in named.items() if result is not None}
    arch_fields = set().union(*reads.values())

    def allowed(script):
        return named[script.name] is not None and all(
            config[f] in tuple(script.choices[f]) for f in arch_fields & set(script.choices)
        )

    valid = [script for script in scripts if allowed(script)]
    fits = [script for script in valid if not any(reads[other.name] - script.fields for other in valid if other is not script)]
    by_exp_name = [script for script in fits if script.name == config.get("exp_name")]
    with_fields = [script for script in fits if reads[script.name]]
    chosen = by_exp_name or (with_fields if len(with_fields) == 1 else [])
    if not chosen:
        raise UnknownScriptError(
            f"no training script here ({', '.join(s.name for s in scripts) or 'none'}) matches its args "
            f"(exp_name {config.get('exp_name')!r}, architecture fields {', '.join(sorted(arch_fields)) or 'none'})"
        )
    script = chosen[0]
    return script, named[script.name][0]


def variant_name(config: dict, scripts=None) -> str:
    """The variant of a run from its args: the variant_name of the script that wrote them (script_of), i.e. its run
    folder name, e.g. "CWCA", "CWCA+alpha_beta", "sparse_fls", "fixed"; a LABEL_PREFIX before it for some scripts
    (e.g. "timesformer_d16_h1_l1_m2_p12")."""
    script, name = script_of(config, scripts)
    return LABEL_PREFIX.get(script.name, "") + name


def run_from_config(config: dict, steps, scores, source: str) -> Run:
    """A Run from a run's args (args.json or wandb config) and its evaluation curve, sorted by step."""
    missing = [key for key in ("env_id", "seed") if config.get(key) is None]
    if missing:
        raise ResultsError(f"{source}: no {', '.join(missing)} in the run's args")
    if not isinstance(config["env_id"], str) or isinstance(config["seed"], bool) or not isinstance(config["seed"], int):
        raise ResultsError(
            f"{source}: env_id {config['env_id']!r} / seed {config['seed']!r} in the run's args; "
            f"env_id is a game name (a string), seed a whole number"
        )
    try:
        variant = variant_name(config)
    except ResultsError as e:
        raise type(e)(f"{source}: {e}") from None
    steps, scores = np.asarray(steps, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    return Run(
        game=game_name(str(config["env_id"])),
        variant=variant,
        seed=int(config["seed"]),
        exp_name=str(config.get("exp_name") or ""),
        steps=steps[order],
        scores=scores[order],
        source=source,
    )


EVAL_ONLY_GLOB = "eval_only_*.csv"  # --eval-only results (attention_utils.evaluations), beside the checkpoint


def check_runs_paths(paths) -> None:
    """Each --runs path must be an existing folder; ResultsError naming the first that is not."""
    for path in map(Path, paths):
        if not path.exists():
            raise ResultsError(f"--runs {path}: no such folder; give run folders or folders holding them")
        if not path.is_dir():
            raise ResultsError(
                f"--runs {path}: a file, not a folder; give the run folder that holds it (args.json + {EVALS_FILE}) "
                f"or a folder holding run folders"
            )


def find_run_dirs(paths, eval_only_allowed: bool = False) -> list[Path]:
    """Run folders (holding args.json and evals.csv) at or under each path. Raises ResultsError for a path that is not
    a folder, for an args.json or evals.csv that is a folder, for folders with args.json but no evals.csv, and when
    none is found. `eval_only_allowed`: a folder with args.json and --eval-only results but no evals.csv (checkpoints
    copied out of their run to be evaluated) is no error and no run folder, and finding none is no error either."""
    check_runs_paths(paths)
    run_dirs, without_evals = set(), set()
    for path in map(Path, paths):
        for args_path in [path / ARGS_FILE] if (path / ARGS_FILE).exists() else sorted(path.rglob(ARGS_FILE)):
            folder = args_path.parent
            for name in (ARGS_FILE, EVALS_FILE):
                if (folder / name).exists() and not (folder / name).is_file():
                    raise ResultsError(f"{folder / name} is a folder, not a file; a run folder holds {name} as a file")
            if (folder / EVALS_FILE).is_file():
                run_dirs.add(folder)
            elif not (eval_only_allowed and any(folder.glob(EVAL_ONLY_GLOB))):
                without_evals.add(folder)
    if without_evals:
        listed = ", ".join(map(str, sorted(without_evals)[:3])) + (" ..." if len(without_evals) > 3 else "")
        raise ResultsError(
            f"{len(without_evals)} run folder(s) with args.json but no {EVALS_FILE}: {listed}; "
            f"a run folder holds both, as the training scripts write them"
        )
    if not run_dirs and paths and not eval_only_allowed:
        raise ResultsError(
            f"no run folders (args.json + {EVALS_FILE}) in {', '.join(map(str, paths))}; "
            f"give the folders the training scripts write (runs/ or a run folder)"
        )
    return sorted(run_dirs)


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


def read_args_json(path) -> dict:
    """A run's settings from its args.json. ResultsError for a file that cannot be read, is not JSON (naming the line
    and column) or is not one JSON object."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(
            f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); args.json holds the run's settings as "
            f"one JSON object, as the training scripts write it"
        ) from None
    if not isinstance(config, dict):
        raise ResultsError(
            f"{path} line 1: {_JSON_TYPES.get(type(config), type(config).__name__)}, not an object; args.json holds "
            f"the run's settings as one JSON object"
        )
    return config


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("less than 1")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


PARSER_NAMES = {
    _non_negative_int: "a whole number >= 0",
    _positive_int: "a whole number >= 1",
    _finite_float: "a finite number",
}


def read_csv_columns(path, parsers: dict, header_text: str) -> dict[str, list]:
    """{column: parsed values} of the columns named in `parsers` ({column: _non_negative_int, _positive_int or
    _finite_float}) of a CSV file with a header row; other columns are not read, blank lines are skipped.
    ResultsError naming the file and the line of the first problem: an empty file, a header without a needed column,
    a row too short for it, a value that does not parse. `header_text`: the header its writer writes (for messages)."""
    path = Path(path)
    values = {column: [] for column in parsers}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ResultsError(f"{path} line 1: empty file; expected the header {header_text}")
            missing = [column for column in parsers if column not in header]
            if missing:
                raise ResultsError(
                    f"{path} line 1: header {','.join(header)!r} has no {', '.join(missing)} column; "
                    f"expected the header {header_text}"
                )
            indices = {column: header.index(column) for column in parsers}
            for row in reader:
                if not row:
                    continue
                for column, parse in parsers.items():
                    if indices[column] >= len(row):
                        raise ResultsError(
                            f"{path} line {reader.line_num}: {len(row)} field(s), no {column}; every row has the "
                            f"header's fields ({header_text})"
                        )
                    try:
                        values[column].append(parse(row[indices[column]].strip()))
                    except ValueError:
                        raise ResultsError(
                            f"{path} line {reader.line_num}: {column} {row[indices[column]]!r} is not {PARSER_NAMES[parse]}"
                        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    except csv.Error as e:  # e.g. a NUL byte (a file cut off while it was written)
        raise ResultsError(f"{path} line {reader.line_num}: not CSV ({e})") from None
    return values


EVALS_HEADER = "global_step,mean_return,std_return,episode_returns"


def read_run_dir(run_dir) -> Run:
    """A Run from a run folder's args.json and evals.csv (other CSV files in the folder are not read). ResultsError
    naming the file and line of a malformed one."""
    run_dir = Path(run_dir)
    config = read_args_json(run_dir / ARGS_FILE)
    columns = read_csv_columns(
        run_dir / EVALS_FILE, {"global_step": _non_negative_int, "mean_return": _finite_float}, EVALS_HEADER
    )
    return run_from_config(config, columns["global_step"], columns["mean_return"], str(run_dir))


def read_run_dirs(paths, eval_only_allowed: bool = False) -> list[Run]:
    """The Runs of the run folders at or under each path (find_run_dirs); runs of no known training script are
    skipped with a note."""
    return read_known_runs(find_run_dirs(paths, eval_only_allowed))


def read_known_runs(run_dirs) -> list[Run]:
    """The Runs of these run folders; runs of no known training script are skipped with a note."""
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(read_run_dir(run_dir))
        except UnknownScriptError as e:
            print(f"note: {e}; skipped")
    return runs


def _unwrap_config(config) -> dict:
    """wandb configs may hold {"value": v} entries (older API / raw config files): plain values."""
    return {
        key: value["value"] if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value else value
        for key, value in dict(config).items()
    }


def wandb_runs(project: str, api=None) -> list[Run]:
    """Runs of a wandb project ("entity/project") through the public API: each run's config (the args.json keys)
    and the full history (scan_history, unsampled) of eval/mean_return against global_step. `api`: a
    wandb.Api()-like object (for tests); by default wandb.Api(). Runs without evaluations, without env_id / seed in their
    config, or of no known training script, are skipped with a note."""
    if api is None:
        import wandb

        api = wandb.Api()
    runs = []
    try:
        project_runs = list(api.runs(project))
    except Exception as e:  # network, authentication, unknown project: one line, not a traceback
        raise ResultsError(f"wandb project {project}: {type(e).__name__}: {e}") from None
    for wandb_run in project_runs:
        source = f"wandb:{project}/{getattr(wandb_run, 'id', None) or getattr(wandb_run, 'name', '?')}"
        rows = [
            row
            for row in wandb_run.scan_history(keys=["global_step", "eval/mean_return"])
            if row.get("eval/mean_return") is not None and row.get("global_step") is not None
        ]
        if not rows:
            print(f"note: {source} has no eval/mean_return; skipped")
            continue
        try:
            runs.append(
                run_from_config(
                    _unwrap_config(wandb_run.config),
                    [row["global_step"] for row in rows],
                    [row["eval/mean_return"] for row in rows],
                    source,
                )
            )
        except ResultsError as e:  # a project may also hold runs of other scripts
            print(f"note: {e}; skipped")
    return runs


def prepare_runs(runs: list[Run]) -> list[Run]:
    """Drop runs without evaluations and duplicates of (exp_name, game, variant, seed) (keeping the run with most
    evaluations), and rename a variant name shared by several experiments to "variant (exp_name)". Prints notes."""
    kept = {}
    for run in runs:
        if len(run.scores) == 0:
            print(f"note: {run.source} has no evaluations yet; skipped")
            continue
        key = (run.exp_name, run.game, run.variant, run.seed)
        if key in kept:
            other = kept[key]
            better = run if len(run.scores) > len(other.scores) else other
            print(
                f"note: {other.source} and {run.source} are both {run.game}/{run.variant}/seed {run.seed}; "
                f"keeping {better.source} ({len(better.scores)} evaluations)"
            )
            kept[key] = better
        else:
            kept[key] = run
    return name_shared_variants(list(kept.values()))


def name_shared_variants(items: list) -> list:
    """Items (runs or evaluations, with `variant` and `exp_name`) whose variant name several experiments share are
    renamed "variant (exp_name)", with a note; the others are returned as they are, in the same order."""
    experiments = defaultdict(set)
    for item in items:
        experiments[item.variant].add(item.exp_name)
    shared = {variant for variant, names in experiments.items() if len(names) > 1}
    if shared:
        print(f"note: variant(s) {', '.join(sorted(shared))} come from several experiments; named 'variant (exp_name)'")
    return [dataclasses.replace(i, variant=f"{i.variant} ({i.exp_name})") if i.variant in shared else i for i in items]


def note_unequal_periods(runs: list[Run]) -> list[str]:
    """Print a note for each game whose runs' last evaluations are at different steps (an unfinished run, another
    --total-timesteps): each run's mean covers its own evaluation period, so their means are not comparable as they
    stand. Returns those games."""
    last_steps = defaultdict(list)
    for run in runs:
        last_steps[run.game].append(int(run.steps[-1]))
    games = sorted(game for game, steps in last_steps.items() if len(set(steps)) > 1)
    for game in games:
        print(
            f"note: runs on {game} end at different steps ({min(last_steps[game]):,} to {max(last_steps[game]):,}); "
            f"each run's mean covers its own evaluation period"
        )
    return games


def ordered_variants(variants) -> list[str]:
    """The paper's order (NA, SWA, CWRA, CWCA, CWRCA) first, each followed by its +ada_attn / (exp) forms, then the rest."""

    def key(variant):
        base = variant.split(" (")[0].split("+")[0]
        known = KNOWN_VARIANT_ORDER.index(base) if base in KNOWN_VARIANT_ORDER else len(KNOWN_VARIANT_ORDER)
        return known, base, variant

    return sorted(set(variants), key=key)


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """{(game, variant): runs sorted by seed}."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.game, run.variant].append(run)
    return {key: sorted(group, key=lambda run: run.seed) for key, group in sorted(groups.items())}


# ---------------------------------------------------------------------------------------------------------------
# per-game table


def mean_and_standard_error(values) -> tuple[float, float]:
    """Sample mean and standard error (std with ddof=1 / sqrt(n)); the SE is nan for a single value."""
    values = np.asarray(values, dtype=np.float64)
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(np.mean(values)), se


def per_game_summary(runs: list[Run]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{game: {variant: (mean over seeds of the runs' mean scores, standard error, number of seeds)}}."""
    summary = defaultdict(dict)
    for (game, variant), group in group_runs(runs).items():
        summary[game][variant] = (*mean_and_standard_error([run.mean_score for run in group]), len(group))
    return dict(sorted(summary.items()))


def game_winners(summary) -> dict[str, list[str]]:
    """{game: variants with the highest mean} (several on an exact tie), for the games every variant of the table has
    runs on; a game that some variant lacks has no winner (it is not in the dict)."""
    variants = {variant for cells in summary.values() for variant in cells}
    winners = {}
    for game, cells in summary.items():
        if set(cells) == variants:
            best = max(mean for mean, _, _ in cells.values())
            winners[game] = [variant for variant, (mean, _, _) in cells.items() if mean == best]
    return winners


def win_counts(winners: dict[str, list[str]], variants) -> dict[str, float]:
    """Number of games won by each variant; a tie between k variants gives each 1/k."""
    counts = {variant: 0.0 for variant in variants}
    for tied in winners.values():
        for variant in tied:
            counts[variant] += 1 / len(tied)
    return counts


def _format_count(count: float) -> str:
    return str(int(count)) if float(count).is_integer() else f"{count:.2f}".rstrip("0")


def _format_cell(cell) -> str:
    if cell is None:
        return "–"
    mean, se, _ = cell
    return f"{mean:.2f} ± {'n/a' if math.isnan(se) else f'{se:.2f}'}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table with a left-aligned first column."""
    lines = ["| " + " | ".join(header) + " |", "|:--" + "|:-:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def per_game_markdown(summary, variants) -> str:
    """The paper's per-game table: mean ± SE per variant, winners in bold, "No. of wins" row."""
    winners = game_winners(summary)
    rows = []
    for game, cells in summary.items():
        row = [game]
        for variant in variants:
            text = _format_cell(cells.get(variant))
            row.append(f"**{text}**" if variant in winners.get(game, ()) else text)
        rows.append(row)
    wins = win_counts(winners, variants)
    rows.append(["**No. of wins**"] + [_format_count(wins[variant]) for variant in variants])
    seeds = sorted({n for cells in summary.values() for _, _, n in cells.values()})
    seeds_text = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    note = (
        f"\nMean evaluation score over the whole evaluation period, averaged over seeds ± standard error across "
        f"seeds ({seeds_text} seeds per cell). Bold: the highest mean of the game."
    )
    unjudged = [game for game in summary if game not in winners]
    if unjudged:
        note += f" No winner for {', '.join(unjudged)} (not every variant has runs there)."
    return markdown_table(["Game", *variants], rows) + note + "\n"


def write_per_game_csv(summary, variants, path) -> None:
    """per_game.csv: game, {variant}_mean, {variant}_se, {variant}_seeds ..., winner (";" on ties; empty for a game
    some variant lacks); a last row "No. of wins" holds the counts in the {variant}_mean columns. Empty cell: no runs,
    or SE with one seed."""
    winners = game_winners(summary)
    header = ["game"] + [f"{variant}_{field}" for variant in variants for field in ("mean", "se", "seeds")] + ["winner"]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for game, cells in summary.items():
            row = [game]
            for variant in variants:
                mean, se, seeds = cells.get(variant, (math.nan, math.nan, 0))
                row += ["" if math.isnan(mean) else repr(mean), "" if math.isnan(se) else repr(se), seeds]
            writer.writerow(row + [";".join(winners.get(game, []))])
        wins = win_counts(winners, variants)
        writer.writerow(["No. of wins"] + [value for variant in variants for value in (repr(wins[variant]), "", "")] + [""])


# ---------------------------------------------------------------------------------------------------------------
# aggregates (rliable)


def aggregate_selection(runs: list[Run], variants) -> tuple[dict[str, list[list[Run]]], list[str]]:
    """({variant: for each game, the runs the aggregates use}, games) for rliable, which needs the same number of runs
    on every game for a variant. Games without reference scores or without runs of every variant are left out; each
    variant keeps its n lowest seeds on every game, n its smallest seed count. Prints a note for everything left out."""
    groups = group_runs(runs)
    games = sorted({run.game for run in runs})
    no_reference = [game for game in games if game not in RANDOM_HUMAN_SCORES]
    if no_reference:
        print(f"note: no human/random reference scores for {', '.join(no_reference)}; left out of the normalised aggregates")
    incomplete = [game for game in games if game in RANDOM_HUMAN_SCORES and any((game, v) not in groups for v in variants)]
    if incomplete:
        print(f"note: not every variant has runs on {', '.join(incomplete)}; left out of the normalised aggregates")
    games = [game for game in games if game not in no_reference and game not in incomplete]
    selection = {}
    for variant in variants if games else []:
        num_runs = min(len(groups[game, variant]) for game in games)
        if any(len(groups[game, variant]) > num_runs for game in games):
            print(
                f"note: {variant} has {num_runs} seed(s) on some game; "
                f"the aggregates use its {num_runs} lowest seed(s) on every game"
            )
        selection[variant] = [groups[game, variant][:num_runs] for game in games]
    return selection, games


def score_matrices(selection: dict[str, list[list[Run]]], games) -> dict[str, np.ndarray]:
    """{variant: human-normalised mean scores of its selected runs, shape (num_runs, num_games)}."""
    return {
        variant: np.array(
            [[human_normalised_score(game, run.mean_score) for run in game_runs] for game, game_runs in zip(games, per_game)]
        ).T
        for variant, per_game in selection.items()
    }


def normalised_score_matrices(runs: list[Run], variants) -> tuple[dict[str, np.ndarray], list[str]]:
    """({variant: human-normalised scores, shape (num_runs, num_games)}, games) for rliable (aggregate_selection)."""
    selection, games = aggregate_selection(runs, variants)
    return score_matrices(selection, games), games


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """[IQM, median, mean, optimality gap] of a (num_runs, num_games) score matrix, with rliable.metrics."""
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(scores),
            metrics.aggregate_median(scores),
            metrics.aggregate_mean(scores),
            metrics.aggregate_optimality_gap(scores),
        ]
    )


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """Seed numpy's global random state for the block, then restore it. rliable's stratified bootstraps draw their
    indices with np.random.choice (the global state) whatever random_state they are given, so this is what makes
    its CIs reproducible."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregate_estimates(matrices: dict[str, np.ndarray], reps: int, seed: int = 0):
    """({variant: [IQM, median, mean, optimality gap]}, {variant: (2, 4) array of 95% CI bounds}) by rliable's
    stratified bootstrap, each variant seeded with `seed` so its CIs do not depend on the other variants."""
    from rliable import library as rly

    points, intervals = {}, {}
    for variant, scores in matrices.items():
        with seeded_numpy(seed):
            point, interval = rly.get_interval_estimates({variant: scores}, aggregate_metrics, reps=reps)
        points[variant], intervals[variant] = point[variant], interval[variant]
    return points, intervals


def performance_profiles(matrices: dict[str, np.ndarray], tau_list, reps: int, seed: int = 0):
    """({variant: fraction of runs with score > tau, for each tau}, {variant: (2, len(tau_list)) 95% CIs}) with
    rly.create_performance_profile (score distributions over all runs and games), each variant seeded with `seed`."""
    from rliable import library as rly

    profiles, cis = {}, {}
    for variant, scores in matrices.items():
        with seeded_numpy(seed):
            point, interval = rly.create_performance_profile(
                {variant: scores}, np.asarray(tau_list, dtype=np.float64), reps=reps
            )
        profiles[variant], cis[variant] = point[variant], interval[variant]
    return profiles, cis


def probabilities_of_improvement(matrices: dict[str, np.ndarray], reps: int, seed: int = 0):
    """({"X,Y": P(X > Y)}, {"X,Y": 95% CI}) for every pair of variants (X before Y; P(Y > X) = 1 - P(X > Y)),
    rliable.metrics.probability_of_improvement on the paired score matrices (same games, runs independent)."""
    from rliable import library as rly
    from rliable import metrics

    variants = list(matrices)
    points, intervals = {}, {}
    for i, x in enumerate(variants):
        for y in variants[i + 1 :]:
            pair = f"{x},{y}"
            with seeded_numpy(seed):
                point, interval = rly.get_interval_estimates(
                    {pair: [matrices[x], matrices[y]]}, metrics.probability_of_improvement, reps=reps
                )
            points[pair], intervals[pair] = float(point[pair]), np.asarray(interval[pair], dtype=np.float64).reshape(2)
    return points, intervals


def aggregates_markdown(points, intervals, games) -> str:
    """Table of the four aggregates with CIs, per variant."""
    rows = [
        [variant]
        + [
            f"{points[variant][m]:.3f} [{intervals[variant][0][m]:.3f}, {intervals[variant][1][m]:.3f}]"
            for m in range(len(METRIC_NAMES))
        ]
        for variant in points
    ]
    note = (
        f"\nHuman-normalised scores on {len(games)} games ({', '.join(games)}); point estimate [95% stratified-bootstrap CI]. "
        f"Reference scores: {REFERENCE_SOURCE}.\n"
    )
    return markdown_table(["Variant", *METRIC_NAMES], rows) + note


def write_aggregates_csv(points, intervals, matrices, games, path) -> None:
    """aggregates.csv: variant, num_games, num_runs (per game), then for each metric its point estimate and CI bounds."""
    slug = [name.lower().replace(" ", "_") for name in METRIC_NAMES]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["variant", "num_games", "num_runs"] + [f"{s}{part}" for s in slug for part in ("", "_ci_low", "_ci_high")]
        )
        for variant in points:
            values = [
                repr(float(v))
                for m in range(len(METRIC_NAMES))
                for v in (points[variant][m], intervals[variant][0][m], intervals[variant][1][m])
            ]
            writer.writerow([variant, len(games), matrices[variant].shape[0]] + values)


# ---------------------------------------------------------------------------------------------------------------
# sample efficiency: the aggregate normalised score against environment steps, over all games


def normalised_curves(selection: dict[str, list[list[Run]]], games) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{variant: (steps, human-normalised evaluation scores of shape (num_runs, num_games, num_steps))} of the runs
    the aggregates use (aggregate_selection). Steps: the union of the evaluation steps of the variant's runs inside
    the range all of them cover; each run's raw (unsmoothed) scores are linearly interpolated onto them (exact where
    the run evaluated). A variant whose runs cover no common range is left out with a note."""
    curves = {}
    for variant, per_game in selection.items():
        runs = [run for game_runs in per_game for run in game_runs]
        start, stop = max(run.steps[0] for run in runs), min(run.steps[-1] for run in runs)
        if start > stop:
            print(
                f"note: {variant}'s runs share no evaluated range of steps ({start:,} > {stop:,}); no sample-efficiency curve"
            )
            continue
        grid = np.unique(np.concatenate([run.steps for run in runs]))
        grid = grid[(grid >= start) & (grid <= stop)]
        scores = np.array(
            [
                [human_normalised_score(game, np.interp(grid, run.steps, run.scores)) for run in game_runs]
                for game, game_runs in zip(games, per_game)
            ]
        )  # (num_games, num_runs, num_steps)
        curves[variant] = grid, scores.transpose(1, 0, 2)  # (num_runs, num_games, num_steps), rliable's layout
    return curves


def per_step_aggregate(scores: np.ndarray, metric: str) -> np.ndarray:
    """rliable's aggregate `metric` of a (num_runs, num_games, num_steps) score array at every step: (num_steps,).
    IQM: the 25% trimmed mean over all runs and games (scipy's trim_mean, which rliable.metrics.aggregate_iqm calls);
    Median / Mean: of the per-game means over runs (aggregate_median / aggregate_mean). Vectorised over steps, as the
    bootstrap calls it thousands of times."""
    if metric == "IQM":
        from scipy import stats

        return stats.trim_mean(scores.reshape(-1, scores.shape[-1]), proportiontocut=0.25, axis=0)  # (runs * games, steps)
    game_means = scores.mean(axis=0)  # (num_games, num_steps)
    return np.median(game_means, axis=0) if metric == "Median" else game_means.mean(axis=0)


def sample_efficiency(curves, metric: str, reps: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{variant: (steps, aggregate `metric` at each step, (2, num_steps) 95% CI bounds)}: rliable's stratified
    bootstrap over the runs of each game (rly.get_interval_estimates on the 3-D score array), seeded per variant."""
    from rliable import library as rly

    efficiency = {}
    for variant, (steps, scores) in curves.items():
        with seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {variant: scores}, functools.partial(per_step_aggregate, metric=metric), reps=reps
            )
        efficiency[variant] = steps, np.asarray(point[variant]), np.asarray(interval[variant])
    return efficiency


def write_sample_efficiency_csv(efficiency, metric: str, curves, path) -> None:
    """sample_efficiency.csv: variant, global_step, metric, value, ci_low, ci_high, num_games, num_runs (per game)."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "global_step", "metric", "value", "ci_low", "ci_high", "num_games", "num_runs"])
        for variant, (steps, values, interval) in efficiency.items():
            num_runs, num_games, _ = curves[variant][1].shape
            for i, step in enumerate(steps):
                writer.writerow(
                    [variant, int(step), metric, repr(float(values[i])), repr(float(interval[0][i])),
                     repr(float(interval[1][i])), num_games, num_runs]
                )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# learning curves


def debiased_ema(values, weight: float = EMA_WEIGHT) -> np.ndarray:
    """s_t = weight * s_{t-1} + (1 - weight) * x_t with s_0 = 0, divided by (1 - weight**t) (TensorBoard's smoothing,
    Adam's bias correction); t = 1, 2, ... over the evaluations."""
    smoothed, state = np.empty(len(values)), 0.0
    for t, value in enumerate(np.asarray(values, dtype=np.float64), start=1):
        state = weight * state + (1 - weight) * value
        smoothed[t - 1] = state / (1 - weight**t) if weight != 1 else value
    return smoothed


def learning_curve(runs: list[Run], weight: float = EMA_WEIGHT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean over seeds, half-width of the 95% CI of that mean; nan with one seed) of the seeds' debiased-EMA
    curves, on the union of their evaluation steps inside the range every seed covers (linear interpolation between a
    seed's steps). CI: Student's t with n - 1 degrees of freedom times the standard error (n seeds; 4.30 for 3 seeds,
    2.78 for 5), not the normal 1.96, which is too narrow for a few seeds."""
    start, stop = max(run.steps[0] for run in runs), min(run.steps[-1] for run in runs)
    grid = np.unique(np.concatenate([run.steps for run in runs]))
    grid = grid[(grid >= start) & (grid <= stop)]
    curves = np.array([np.interp(grid, run.steps, debiased_ema(run.scores, weight)) for run in runs])
    mean = curves.mean(axis=0)
    if len(runs) == 1:
        return grid, mean, np.full(len(grid), np.nan)
    from scipy import stats

    t_quantile = float(stats.t.ppf(0.975, len(runs) - 1))
    return grid, mean, t_quantile * curves.std(axis=0, ddof=1) / math.sqrt(len(runs))


# ---------------------------------------------------------------------------------------------------------------
# alignment of biases


def alignment_shares(winners: dict[str, list[str]], variants) -> list[tuple[str, int, dict[str, float]]]:
    """[(axis class, number of its games in the results, {variant: share of those games won})] for horizontal,
    vertical, other, then the three kinds of other ("other: ..."); a tie between k variants gives each 1/k of the
    game. Classes without games are left out; unclassified games (not in the paper) are noted."""
    unclassified = [game for game in winners if not any(game in games for games in AXIS_CLASSES.values())]
    if unclassified:
        print(f"note: {', '.join(unclassified)} not in the paper's game classification; left out of the alignment table")
    classes = list(AXIS_CLASSES.items()) + [(f"other: {kind}", games) for kind, games in OTHER_KINDS.items()]
    table = []
    for name, class_games in classes:
        won = {game: tied for game, tied in winners.items() if game in class_games}
        if won:
            counts = win_counts(won, variants)
            table.append((name, len(won), {variant: counts[variant] / len(won) for variant in variants}))
    return table


def alignment_markdown(table, variants) -> str:
    """Share of each class's games won by each variant (highest share in bold)."""
    rows = []
    for name, num_games, shares in table:
        best = max(shares.values())
        rows.append(
            [name, str(num_games)] + [f"**{shares[v]:.2f}**" if shares[v] == best else f"{shares[v]:.2f}" for v in variants]
        )
    return markdown_table(["Axis of dynamics", "Games", *variants], rows)


def write_alignment_csv(table, variants, path) -> None:
    """alignment.csv: axis_class, num_games, one share column per variant."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["axis_class", "num_games", *variants])
        for name, num_games, shares in table:
            writer.writerow([name, num_games] + [repr(shares[v]) for v in variants])


# ---------------------------------------------------------------------------------------------------------------
# plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def variant_colors(variants) -> dict:
    """{variant: color}: seaborn's colorblind palette in variant order, as rliable's plots use it."""
    import seaborn as sns

    return dict(zip(variants, sns.color_palette("colorblind", n_colors=len(variants))))


def plot_learning_curves(runs: list[Run], variants, path, weight: float = EMA_WEIGHT) -> None:
    """learning_curves.png: a grid with one panel per game, one line (mean of debiased EMAs) and 95% band per variant."""
    plt = _pyplot()
    groups = group_runs(runs)
    games = sorted({run.game for run in runs})
    columns = min(len(games), 6)
    rows = math.ceil(len(games) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.6), squeeze=False, layout="constrained")
    colors = variant_colors(variants)
    for ax, game in zip(axes.flat, games):
        for variant in variants:
            if (game, variant) not in groups:
                continue
            steps, mean, half_width = learning_curve(groups[game, variant], weight)
            ax.plot(steps, mean, color=colors[variant], label=variant, linewidth=1.2)
            if not np.all(np.isnan(half_width)):
                ax.fill_between(steps, mean - half_width, mean + half_width, color=colors[variant], alpha=0.2, linewidth=0)
        ax.set_title(game, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
    for ax in axes.flat[len(games) :]:
        ax.axis("off")
    fig.supxlabel("environment steps")
    fig.supylabel(f"evaluation return (debiased EMA {weight}, mean ± 95% CI over seeds)")
    handles = [plt.Line2D([], [], color=colors[v], label=v) for v in variants]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(variants), 8), frameon=False)
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def plot_aggregates(points, intervals, variants, path) -> None:
    """aggregates.png with rliable.plot_utils.plot_interval_estimates."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        metric_names=list(METRIC_NAMES),
        algorithms=list(variants),
        colors=variant_colors(variants),
        xlabel="Human-normalised score",
        max_ticks=3,
        xlabel_y_coordinate=0.11 - 1.62 / len(variants),
    )
    # rliable's figure is 0.37 in per variant high and puts the label at this figure fraction: about 0.6 in below
    # the axes, clear of the tick labels whatever the number of variants
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_performance_profiles(profiles, cis, tau_list, path) -> None:
    """performance_profiles.png with rliable.plot_utils.plot_performance_profiles."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles,
        tau_list,
        performance_profile_cis=cis,
        ax=ax,
        colors=variant_colors(list(profiles)),
        xlabel=r"Human-normalised score ($\tau$)",
        legend=True,
        legendsize="medium",
    )
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_sample_efficiency(efficiency, metric: str, variants, games, path) -> None:
    """sample_efficiency.png with rliable.plot_utils.plot_sample_efficiency_curve, one call per variant (each has its
    own steps) on one axis."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = variant_colors(variants)
    for variant in [v for v in variants if v in efficiency]:
        steps, values, interval = efficiency[variant]
        plot_utils.plot_sample_efficiency_curve(
            steps / 1e6,
            {variant: values},
            {variant: interval},
            algorithms=[variant],
            colors=colors,
            ax=ax,
            xlabel="environment steps (millions)",
            ylabel=f"{metric} human-normalised score",
            labelsize="large",
            ticklabelsize="medium",
            marker="",
            linewidth=1.5,
        )
    ax.legend(loc="best", frameon=False)
    named = ", ".join(games) if len(games) <= 6 else f"{len(games)} games"
    ax.set_title(f"{named}; 95% stratified-bootstrap CIs", fontsize="medium")
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_probability_of_improvement(points, intervals, path) -> None:
    """probability_of_improvement.png with rliable.plot_utils.plot_probability_of_improvement."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(4.5, 0.5 + 0.45 * len(points)))
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    plot_utils.plot_probability_of_improvement(points, intervals, pair_separator=",", ax=ax, xticks=ticks)
    for axis in fig.axes:  # the whole [0, 1] range, so that every pair shows (a zero-width CI at an edge otherwise vanishes)
        axis.set_xlim(-0.02, 1.02)
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# everything


def write_results(
    runs: list[Run],
    out,
    bootstrap_reps: int = 2000,
    seed: int = 0,
    improvement_reps: Optional[int] = None,
    efficiency_metric: str = "IQM",
) -> list[Path]:
    """Write all tables and plots of `runs` to the folder `out`; returns the paths written. `improvement_reps`:
    bootstrap replications of the probabilities of improvement (default: bootstrap_reps); `efficiency_metric`: the
    aggregate of the sample-efficiency curve (EFFICIENCY_METRICS)."""
    runs = prepare_runs(runs)
    if not runs:
        raise ResultsError("no run has evaluations; evals.csv holds only its header until the first evaluation")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    variants = ordered_variants(run.variant for run in runs)
    note_unequal_periods(runs)
    written = []

    summary = per_game_summary(runs)
    write_text(out / "per_game.md", per_game_markdown(summary, variants))
    write_per_game_csv(summary, variants, out / "per_game.csv")
    written += [out / "per_game.md", out / "per_game.csv"]

    winners = game_winners(summary)
    unjudged = [game for game in summary if game not in winners]
    if unjudged:
        print(
            f"note: not every variant has runs on {', '.join(unjudged)}; no winner there (no bold, no win, not in alignment)"
        )
    table = alignment_shares(winners, variants)
    write_text(out / "alignment.md", alignment_markdown(table, variants))
    write_alignment_csv(table, variants, out / "alignment.csv")
    written += [out / "alignment.md", out / "alignment.csv"]

    plot_learning_curves(runs, variants, out / "learning_curves.png")
    written.append(out / "learning_curves.png")

    selection, games = aggregate_selection(runs, variants)
    if not games:
        print(
            "note: no game with reference scores and runs of every variant; "
            "no aggregates, sample efficiency, profiles or probabilities of improvement"
        )
        return written
    matrices = score_matrices(selection, games)
    points, intervals = aggregate_estimates(matrices, bootstrap_reps, seed)
    write_text(out / "aggregates.md", aggregates_markdown(points, intervals, games))
    write_aggregates_csv(points, intervals, matrices, games, out / "aggregates.csv")
    plot_aggregates(points, intervals, variants, out / "aggregates.png")
    written += [out / "aggregates.md", out / "aggregates.csv", out / "aggregates.png"]

    curves = normalised_curves(selection, games)
    if curves:
        efficiency = sample_efficiency(curves, efficiency_metric, bootstrap_reps, seed)
        write_sample_efficiency_csv(efficiency, efficiency_metric, curves, out / "sample_efficiency.csv")
        plot_sample_efficiency(efficiency, efficiency_metric, variants, games, out / "sample_efficiency.png")
        written += [out / "sample_efficiency.csv", out / "sample_efficiency.png"]

    highest = max(float(np.max(m)) for m in matrices.values())
    tau_list = np.linspace(0.0, min(max(highest, 1.0), 8.0), 81)
    profiles, profile_cis = performance_profiles(matrices, tau_list, bootstrap_reps, seed)
    with atomic_open(out / "performance_profiles.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "tau", "fraction_of_runs_above", "ci_low", "ci_high"])
        for variant, profile in profiles.items():
            for i, tau in enumerate(tau_list):
                writer.writerow(
                    [
                        variant,
                        repr(float(tau)),
                        repr(float(profile[i])),
                        repr(float(profile_cis[variant][0][i])),
                        repr(float(profile_cis[variant][1][i])),
                    ]
                )
    plot_performance_profiles(profiles, profile_cis, tau_list, out / "performance_profiles.png")
    written += [out / "performance_profiles.csv", out / "performance_profiles.png"]

    if len(matrices) > 1:
        improvement_reps = improvement_reps or bootstrap_reps
        num_pairs = len(matrices) * (len(matrices) - 1) // 2
        print(
            f"probability of improvement: {num_pairs} pair(s) x {len(games)} game(s) x {improvement_reps} bootstrap reps "
            f"(a scipy Mann-Whitney U test each, about 1.5 ms)",
            flush=True,
        )
        probabilities, probability_cis = probabilities_of_improvement(matrices, improvement_reps, seed)
        with atomic_open(out / "probability_of_improvement.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["x", "y", "p_x_better_than_y", "ci_low", "ci_high", "num_games"])
            for pair, probability in probabilities.items():
                x, y = pair.split(",", 1)
                writer.writerow(
                    [
                        x,
                        y,
                        repr(probability),
                        repr(float(probability_cis[pair][0])),
                        repr(float(probability_cis[pair][1])),
                        len(games),
                    ]
                )
        plot_probability_of_improvement(probabilities, probability_cis, out / "probability_of_improvement.png")
        written += [out / "probability_of_improvement.csv", out / "probability_of_improvement.png"]
    else:
        print("note: one variant only; no probability of improvement")
    return written


@dataclass
class Args:
    """The self-attention paper's result tables and plots (per-game table, rliable aggregates, sample efficiency,
    learning curves, alignment of biases) from the runs' evaluations, and the Free-Lunch Saliency paper's evaluation
    tables and episode length vs return plots from their --eval-only results."""

    out: Path
    """folder for the tables and plots (made if missing; outputs of an earlier call are replaced, with a note)"""
    runs: tuple[Path, ...] = ()
    """run folders, or folders holding run folders (searched recursively for args.json + evals.csv, and for the
    eval_only_*.csv files of --eval-only)"""
    wandb_project: Optional[str] = None
    """also read the runs of this wandb project ("entity/project") through the public API"""
    bootstrap_reps: int = 2000
    """stratified-bootstrap replications of the aggregate, sample-efficiency and performance-profile CIs"""
    improvement_reps: int = 500
    """bootstrap replications of the probability-of-improvement CIs (the slow part: pairs x games x reps Mann-Whitney
    U tests, about 7 min for 5 variants on 56 games at 500)"""
    seed: int = 0
    """random state of the bootstrap (same seed and reps, same CIs); 0 to 2**32 - 1"""
    efficiency_metric: Literal["IQM", "Median", "Mean"] = "IQM"
    """the aggregate of human-normalised scores the sample-efficiency curve shows at each step (rliable's)"""


# every file write_results and write_eval_only_results may write (and length_vs_return_<game>.png)
OUTPUT_NAMES = (
    "per_game.md", "per_game.csv", "alignment.md", "alignment.csv", "learning_curves.png", "aggregates.md",
    "aggregates.csv", "aggregates.png", "sample_efficiency.csv", "sample_efficiency.png", "performance_profiles.csv",
    "performance_profiles.png", "probability_of_improvement.csv", "probability_of_improvement.png", "eval_only.md",
    "eval_only.csv",
)  # fmt: skip


def check_options(args: Args) -> None:
    """The options that need no input read: ResultsError for the first bad one."""
    if not args.runs and args.wandb_project is None:
        raise ResultsError("give --runs DIR [DIR ...] and/or --wandb-project entity/project")
    for option in ("bootstrap_reps", "improvement_reps"):
        if getattr(args, option) < 1:
            raise ResultsError(f"--{option.replace('_', '-')} {getattr(args, option)}: give at least 1 replication")
    if not 0 <= args.seed < 2**32:
        raise ResultsError(f"--seed {args.seed}: numpy's random state takes 0 to 2**32 - 1")
    if args.efficiency_metric not in EFFICIENCY_METRICS:
        raise ResultsError(f"--efficiency-metric {args.efficiency_metric}: give one of {', '.join(EFFICIENCY_METRICS)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out}: a file, not a folder; give a folder for the tables and plots (made if missing)")
    existing = next(parent for parent in [out, *out.parents] if parent.exists())
    if not existing.is_dir():
        raise ResultsError(f"--out {out}: {existing} is a file, so the folder cannot be made; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ResultsError(f"--out {out}: {existing} is not writable; give a folder you can write to")
    check_runs_paths(args.runs)


def note_replaced_outputs(out) -> None:
    """A note naming the outputs of an earlier call in `out` (those this call writes are replaced)."""
    out = Path(out)
    if not out.is_dir():
        return
    earlier = sorted(path.name for path in out.iterdir() if path.name in OUTPUT_NAMES or path.match("length_vs_return_*.png"))
    if earlier:
        listed = ", ".join(earlier[:4]) + (" ..." if len(earlier) > 4 else "")
        print(
            f"note: {out} already holds {len(earlier)} result file(s) ({listed}); those written now replace them, "
            f"the others stay as they are"
        )


def main(args: Args) -> list[Path]:
    """Check the options, read and check every input, then write the outputs; bad input exits with one
    `error: ...` line before anything is written."""
    from attention_utils import evaluations as eval_only

    try:
        check_options(args)
        run_dirs = find_run_dirs(args.runs, eval_only_allowed=True)
        eval_only_files = eval_only.find_eval_only_files(args.runs)
        if args.runs and not run_dirs and not eval_only_files:
            raise ResultsError(
                f"no run folders (args.json + {EVALS_FILE}) and no eval_only_*.csv in {', '.join(map(str, args.runs))}; "
                f"give the folders the training scripts write (runs/ or a run folder)"
            )
        runs = read_known_runs(run_dirs)
        evaluations = []
        for path in eval_only_files:
            try:
                evaluations.append(eval_only.read_eval_only(path))
            except UnknownScriptError as e:
                print(f"note: {e}; skipped")
        if args.wandb_project is not None:
            runs += wandb_runs(args.wandb_project)
            if not runs and not evaluations:
                raise ResultsError(f"no runs with evaluations in wandb project {args.wandb_project}")
        if not runs and not evaluations:
            raise ResultsError("no run of a known training script (ppo_atari_*.py) in --runs")
        note_replaced_outputs(args.out)
        written = []
        if any(len(run.scores) for run in runs) or not evaluations:
            written += write_results(
                runs, args.out, args.bootstrap_reps, args.seed, args.improvement_reps, args.efficiency_metric
            )
        elif runs:
            print(f"note: no run has evaluations in its {EVALS_FILE} yet; only the --eval-only tables are written")
        if evaluations:
            written += eval_only.write_eval_only_results(evaluations, args.out)
    except ResultsError as e:
        sys.exit(f"error: {e}")
    print("wrote " + ", ".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
