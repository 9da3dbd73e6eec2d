"""Every sweeps/*.yaml: the program exists, its parameters are fields of the program's Args, and the
command lines the wandb agent builds from it parse with tyro."""

import dataclasses
import itertools
import math

import pytest
import tyro
import yaml
from conftest import REPO, VARIANTS, load_module

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


SWEEP_FILES = sorted([*REPO.glob("sweeps/*.yaml"), *REPO.glob("sweeps/*.yml")])
SWEEP_IDS = [p.name for p in SWEEP_FILES]
FULL_GRID_LIMIT = 100  # larger grids: every value of each parameter once, the others at their first value
RUNTIME_FIELDS = {"batch_size", "minibatch_size", "num_iterations"}  # overwritten by the script: never swept

PAPER_GAMES = (
    "Alien Amidar Assault Asterix Asteroids Atlantis BankHeist BattleZone BeamRider Berzerk Bowling Boxing "
    "Breakout Centipede ChopperCommand CrazyClimber Defender DemonAttack DoubleDunk Enduro FishingDerby Freeway "
    "Frostbite Gopher Gravitar Hero IceHockey Jamesbond Kangaroo Krull KungFuMaster MontezumaRevenge MsPacman "
    "NameThisGame Phoenix Pitfall Pong PrivateEye Qbert Riverraid RoadRunner Robotank Seaquest Skiing Solaris "
    "SpaceInvaders StarGunner Tennis TimePilot Tutankham UpNDown Venture VideoPinball WizardOfWor YarsRevenge Zaxxon"
).split()

_programs = {}


def load_sweep(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict), f"{path.name}: not a mapping"
    return config


def program_module(config):
    path = (REPO / config["program"]).resolve()
    if path not in _programs:
        _programs[path] = load_module(path, f"sweep_program_{path.stem}")
    return _programs[path]


def parameter_values(spec):
    """The values a sweep parameter takes (grid: value / values; others: also min and max)."""
    assert isinstance(spec, dict), spec
    if "values" in spec:
        assert isinstance(spec["values"], list) and spec["values"], spec
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    assert "min" in spec and "max" in spec, f"unsupported parameter spec {spec}"
    return [spec["min"], spec["max"]]


def combinations(config):
    """The grid, or for large grids a covering set: each value of each parameter at least once."""
    names = list(config["parameters"])
    values = [parameter_values(config["parameters"][n]) for n in names]
    if math.prod(len(v) for v in values) <= FULL_GRID_LIMIT:
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
    first = {n: v[0] for n, v in zip(names, values)}
    return [{**first, n: value} for n, vs in zip(names, values) for value in vs]


def agent_command(config, params):
    """The command line the wandb agent runs for one set of parameter values (wandb_agent.py's logic)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    sweep_vars = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [config["program"]]
    sweep_vars["env"] = ["/usr/bin/env"]
    command = []
    for chunk in config.get("command") or sweep_utils.DEFAULT_SWEEP_COMMAND:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            assert chunk[2:-1] in sweep_vars, f"unknown wandb command macro {chunk}"
            command += sweep_vars[chunk[2:-1]]
        else:
            command.append(chunk)
    return command


def test_sweep_files_present():
    names = {p.name for p in SWEEP_FILES}
    assert {"selfattn.yaml", "selfattn_smoke.yaml"} <= names, names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=SWEEP_IDS)
def test_sweep_structure(path):
    config = load_sweep(path)
    assert config.get("method") in ("grid", "random", "bayes"), config.get("method")
    assert (REPO / config["program"]).is_file(), f"{path.name}: program {config['program']} not in the repository"
    metric = config.get("metric")
    assert isinstance(metric, dict) and metric.get("goal") in ("maximize", "minimize") and metric.get("name"), metric
    assert isinstance(config.get("parameters"), dict) and config["parameters"], path.name
    for name, spec in config["parameters"].items():
        if config["method"] == "grid":
            assert "value" in spec or "values" in spec, f"{path.name}: grid parameter {name} needs value(s): {spec}"
        parameter_values(spec)
    command = config.get("command")
    if command is not None:
        assert "${program}" in command, command
        assert any(str(c).startswith("${args") for c in command), command


@pytest.mark.parametrize("path", SWEEP_FILES, ids=SWEEP_IDS)
def test_sweep_parameters_are_args_fields(path):
    config = load_sweep(path)
    fields = {f.name for f in dataclasses.fields(program_module(config).Args)}
    for name in config["parameters"]:
        assert "_" not in name, f"{path.name}: {name!r}: use the command-line spelling, {name.replace('_', '-')!r}"
        field = name.replace("-", "_")
        assert field in fields, f"{path.name}: parameter {name!r} is not a field of Args"
        assert field not in RUNTIME_FIELDS, f"{path.name}: {name!r} is computed at runtime, sweeping it does nothing"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=SWEEP_IDS)
def test_sweep_command_lines_parse(path):
    config = load_sweep(path)
    module = program_module(config)
    combos = combinations(config)
    for name, spec in config["parameters"].items():  # every value is covered
        assert {repr(c[name]) for c in combos} == {repr(v) for v in parameter_values(spec)}, name
    for params in combos:
        command = agent_command(config, params)
        assert config["program"] in command, command
        argv = command[command.index(config["program"]) + 1 :]
        assert not any("${" in a for a in command), command
        try:
            parsed = tyro.cli(module.Args, args=argv)
        except SystemExit as e:
            pytest.fail(f"{path.name}: tyro rejects {argv} (exit {e.code})")
        for name, value in params.items():
            assert getattr(parsed, name.replace("-", "_")) == value, (name, value, argv)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=SWEEP_IDS)
def test_sweep_env_ids_are_games(path):
    config = load_sweep(path)
    module = program_module(config)
    spec = config["parameters"].get("env-id")
    values = parameter_values(spec) if spec else [module.Args().env_id]
    for env_id in values:
        assert isinstance(env_id, str), env_id
        try:
            module.parse_game(env_id)
        except SystemExit as e:
            pytest.fail(f"{path.name}: env-id {env_id!r} is not a game: {e.code}")


def test_selfattn_grid_is_56_games_5_variants_5_seeds():
    config = load_sweep(REPO / "sweeps" / "selfattn.yaml")
    assert config["method"] == "grid"
    assert config["program"] == "ppo_atari_selfattn.py"
    assert config["metric"] == {"name": "eval/mean_return", "goal": "maximize"}
    params = config["parameters"]
    assert sorted(parameter_values(params["env-id"])) == sorted(PAPER_GAMES)
    assert len(set(parameter_values(params["env-id"]))) == 56
    assert parameter_values(params["self-attn"]) == VARIANTS
    assert sorted(parameter_values(params["seed"])) == [0, 1, 10, 42, 1234]
    assert parameter_values(params["track"]) == [True]
    assert math.prod(len(parameter_values(s)) for s in params.values()) == 56 * 5 * 5
    assert config["command"] == ["${env}", "python", "${program}", "${args_no_boolean_flags}"]
    # what the agent runs for one grid point
    command = agent_command(config, {"env-id": "Pong", "self-attn": "CWCA", "seed": 42, "track": True})
    assert command == [
        "/usr/bin/env",
        "python",
        "ppo_atari_selfattn.py",
        "--env-id=Pong",
        "--self-attn=CWCA",
        "--seed=42",
        "--track",
    ]


def test_selfattn_smoke_grid():
    config = load_sweep(REPO / "sweeps" / "selfattn_smoke.yaml")
    assert config["method"] == "grid"
    combos = combinations(config)
    assert len(combos) == 2 * 5
    assert {c["env-id"] for c in combos} == {"Pong", "Breakout"}
    assert {c["self-attn"] for c in combos} == set(VARIANTS)
    assert all(c["seed"] == 1 and c["total-timesteps"] == 100_000 and c["eval-freq"] == 20_000 for c in combos)


def test_topdown_grid_is_57_games_3_query_modes_3_seeds():
    from attention_utils.atari_scores import RANDOM_HUMAN_SCORES

    config = load_sweep(REPO / "sweeps" / "topdown.yaml")
    assert config["method"] == "grid" and config["program"] == "ppo_atari_topdown.py"
    params = config["parameters"]
    assert sorted(parameter_values(params["env-id"])) == sorted(RANDOM_HUMAN_SCORES)  # the standard 57 games
    assert "Seaquest" in parameter_values(params["env-id"])  # the one section 4.4 game the text names
    assert parameter_values(params["query-mode"]) == ["topdown", "fixed", "l2norm"]
    assert math.prod(len(parameter_values(spec)) for spec in params.values()) == 57 * 3 * 3
    command = agent_command(config, {"env-id": "Seaquest", "query-mode": "fixed", "seed": 2, "track": True})
    assert command == [
        "/usr/bin/env",
        "python",
        "ppo_atari_topdown.py",
        "--env-id=Seaquest",
        "--query-mode=fixed",
        "--seed=2",
        "--track",
    ]


@pytest.mark.parametrize(
    "sweep, program, archs",
    [
        ("thesis_timesformer.yaml", "ppo_atari_timesformer.py", None),
        ("thesis.yaml", "ppo_atari_temporal.py", ["adaptive", "spatiotemporal"]),
    ],
)
def test_thesis_grids_are_4_games_by_archs_by_3_seeds(sweep, program, archs):
    """The thesis' games x seeds 1-3, and for the temporal script x its two --arch agents (a wandb grid runs
    one program, so the TimeSformer has a file of its own; the Mott et al. agent is in sweeps/topdown.yaml)."""
    config = load_sweep(REPO / "sweeps" / sweep)
    assert config["method"] == "grid" and config["program"] == program
    assert config["metric"] == {"name": "eval/mean_return", "goal": "maximize"}
    params = config["parameters"]
    assert parameter_values(params["env-id"]) == ["Pong", "Enduro", "Breakout", "MsPacman"]  # the thesis' games
    assert parameter_values(params["seed"]) == [1, 2, 3]
    assert (parameter_values(params["arch"]) if "arch" in params else None) == archs
    assert math.prod(len(parameter_values(spec)) for spec in params.values()) == 4 * 3 * (len(archs) if archs else 1)
    if archs:  # the thesis's Adaptive agent is defined by its learned attention spans; the spatio-temporal reuses it
        assert params["adaptive-span"] == {"value": True}
    span = {"adaptive-span": True} if archs else {}
    chosen = {"env-id": "Enduro", **({"arch": archs[-1]} if archs else {}), "seed": 2, **span, "track": True}
    expected = [
        "--env-id=Enduro",
        *([f"--arch={archs[-1]}"] if archs else []),
        "--seed=2",
        *(["--adaptive-span"] if archs else []),
        "--track",
    ]
    assert agent_command(config, chosen) == ["/usr/bin/env", "python", program, *expected]
