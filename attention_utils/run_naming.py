"""How attention_utils.results and attention_utils.evaluations name a run: its game (from the env id), its variant
(the variant_name of the training script that wrote its args), a variant name several experiments share, and the
order of variants in the tables."""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

from attention_utils.run_files import ResultsError

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


# the self-attention paper's column order, then the FLS paper's Table 3 row order; other variants follow by name
KNOWN_VARIANT_ORDER = (
    "NA", "SWA", "CWRA", "CWCA", "CWRCA",
    "nature", "daqn", "rsppo", "rsppo_nopad", "sparse_fls", "sparse_fls_pool", "sparse_fls_norm", "sparse_fls_1x1",
    "sparse_fls_sp2", "sparse_fls_norelu", "sparse_fls_norelu_pool", "sparse_fls_h1", "sparse_fls_x3", "dense_fls",
    "dense_fls_norelu",
)  # fmt: skip


def ordered_variants(variants) -> list[str]:
    """The paper's order (NA, SWA, CWRA, CWCA, CWRCA) first, each followed by its +ada_attn / (exp) forms, then the rest."""

    def key(variant):
        base = variant.split(" (")[0].split("+")[0]
        known = KNOWN_VARIANT_ORDER.index(base) if base in KNOWN_VARIANT_ORDER else len(KNOWN_VARIANT_ORDER)
        return known, base, variant

    return sorted(set(variants), key=key)
