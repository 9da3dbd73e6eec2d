"""Finding the run folders of attention_utils.results and reading their files, checked: every problem is a
ResultsError naming the file and line, which the CLI prints as one `error: ...` line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

EVALS_FILE, ARGS_FILE = "evals.csv", "args.json"
EVAL_ONLY_GLOB = "eval_only_*.csv"  # --eval-only results (attention_utils.evaluations), beside the checkpoint


class ResultsError(Exception):
    """Bad input; the CLI prints it as one `error: ...` line."""


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
