"""The layout rules: each training script is a complete experiment that imports attention_utils only lazily, for
an optional feature; the package imports no script; the scripts share their loop word for word; ruff is clean."""

import ast
import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, script_env

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in REPO.glob("ppo_atari_*.py"))
FEEDFORWARD = ["ppo_atari_selfattn.py", "ppo_atari_fls.py", "ppo_atari_timesformer.py"]
RECURRENT = [s for s in SCRIPTS if s not in FEEDFORWARD]
# the text every script shares with ppo_atari_selfattn.py, word for word
SHARED_FUNCTIONS = [
    "import_optional",
    "parse_game",
    "make_env",
    "auto_precision",
    "cpu_flags",
    "configure_determinism",
    "layer_init",
    "write_atomically",
    "save_checkpoint",
    "load_checkpoint",
    "request_stop",
]
# ... and the feed-forward ones also these (the recurrent ones carry a state through them)
FEEDFORWARD_FUNCTIONS = ["compute_gae", "evaluate", "receive"]
# Run a script with attention_utils missing (as when the file is copied alone into an empty folder): an import of
# it raises ModuleNotFoundError.
WITHOUT_PACKAGE = (
    "import runpy, sys; sys.modules['attention_utils'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)

# The recurrent main block is the feed-forward one with these lines removed and these added, nothing else (indentation
# stripped): a change to one block that is not mirrored in the other fails the test.
FEEDFORWARD_ONLY_LINES = [
    "env_groups = [make_env(game, group_size, args.seed + g * group_size, True, env_threads) for g in range(num_groups)]",
    "eval_envs = make_env(game, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, False, env_threads)",
    "get_action_and_value = torch.compile(agent.get_action_and_value) if args.compile else agent.get_action_and_value",
    "get_value = torch.compile(agent.get_value) if args.compile else agent.get_value",
    "action, logprob, _, value = get_action_and_value(next_obs[rows])",
    "next_value = get_value(next_obs).reshape(1, -1)",
    "b_inds = torch.randperm(args.batch_size, device=device)  # minibatch indices made on the device",
    "for start in range(0, args.batch_size, args.minibatch_size):",
    "end = start + args.minibatch_size",
    "mb_inds = b_inds[start:end]",
    "_, newlogprob, entropy, newvalue = get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])",
    "loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef",
]
RECURRENT_ONLY_LINES = [
    'rgb = args.frame_input == "rgb"',
    "env_groups = [make_env(game, group_size, args.seed + g * group_size, True, env_threads, rgb) for g in range(num_groups)]",
    "eval_envs = make_env(game, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, False, env_threads, rgb)",
    "if args.compile:  # the agent's per-step cell, not the unrolled sequence (`compile_core`)",
    "agent.compile_core()",
    "get_action_and_value, get_value = agent.get_action_and_value, agent.get_value",
    "prev_actions_buf = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)",
    "prev_rewards_buf = torch.zeros((args.num_steps, args.num_envs), device=device)",
    '# recurrent inputs of the next step: the agent\'s state (env dimension first), previous action ("none" = num_actions)',
    "# and previous clipped reward",
    "next_state = agent.initial_state(args.num_envs, device)",
    "next_prev_action = torch.full((args.num_envs,), num_actions, dtype=torch.long, device=device)",
    "next_prev_reward = torch.zeros(args.num_envs, device=device)",
    "initial_state = tuple(s.clone() for s in next_state)  # the update replays each env's sequence from here",
    "prev_actions_buf[step, rows] = next_prev_action[rows]",
    "prev_rewards_buf[step, rows] = next_prev_reward[rows]",
    "",
    "state = tuple(s[rows] for s in next_state)",
    "action, logprob, _, value, state = get_action_and_value(",
    "next_obs[rows], state, next_prev_action[rows], next_prev_reward[rows], next_done[rows]",
    ")",
    "for s, new in zip(next_state, state):  # zeros after an episode's last observation",
    "s[rows] = new",
    "next_prev_action[rows] = torch.where(next_done[rows].bool(), num_actions, action)",
    "dones_buf[sent_step[g - 1]],",
    "next_prev_reward,",
    "dones_buf[sent_step[g]],",
    "next_prev_reward,",
    "next_value = get_value(next_obs, next_state, next_prev_action, next_prev_reward, next_done).reshape(1, -1)",
    "b_prev_actions = prev_actions_buf.reshape(-1)",
    "b_prev_rewards = prev_rewards_buf.reshape(-1)",
    "b_dones = dones_buf.reshape(-1)",
    "# minibatches of whole environments: each env's sequence is replayed from the rollout's initial state",
    "envs_per_batch = args.num_envs // args.num_minibatches",
    "env_inds = np.arange(args.num_envs)",
    "flat_inds = np.arange(args.batch_size).reshape(args.num_steps, args.num_envs)",
    "np.random.shuffle(env_inds)",
    "for start in range(0, args.num_envs, envs_per_batch):",
    "mb_envs = env_inds[start : start + envs_per_batch]",
    "mb_inds = torch.from_numpy(flat_inds[:, mb_envs].ravel()).to(device)  # (T * n,) time-major",
    "mb_state = tuple(s[torch.from_numpy(mb_envs).to(device)] for s in initial_state)",
    "_, newlogprob, entropy, newvalue, _ = get_action_and_value(",
    "b_obs[mb_inds],",
    "mb_state,",
    "b_prev_actions[mb_inds],",
    "b_prev_rewards[mb_inds],",
    "b_dones[mb_inds],",
    "b_actions[mb_inds],",
    ")",
    "if epoch == 0 and start == 0:  # before any gradient step the replay must reproduce the rollout exactly",
    "replay_logprob_error = logratio.abs().max().item()",
    "replay_value_error = (newvalue.view(-1) - b_values[mb_inds]).abs().max().item()",
    "loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef + agent.auxiliary_loss()",
    'writer.add_scalar("debug/replay_logprob_error", replay_logprob_error, global_step)',
    'writer.add_scalar("debug/replay_value_error", replay_value_error, global_step)',
    "for tag, value in agent.logged_scalars().items():",
    "writer.add_scalar(tag, value, global_step)",
]


@pytest.mark.quick
def test_all_scripts_are_known():
    """A new script must be placed in FEEDFORWARD or be recurrent on purpose."""
    assert set(FEEDFORWARD) <= set(SCRIPTS)
    assert RECURRENT == ["ppo_atari_temporal.py", "ppo_atari_topdown.py"]


def imported_modules(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code + "\nprint(' '.join(sorted(sys.modules)))"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.quick
def test_package_imports_no_script():
    modules = [
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO / "attention_utils").rglob("*.py")
    ]
    loaded = imported_modules("import importlib, sys\n" + "\n".join(f"importlib.import_module('{m}')" for m in modules))
    assert {"attention_utils.ale", "attention_utils.runs", "attention_utils.pictures.selfattn"} <= loaded
    assert not [m for m in loaded if m.startswith("ppo_atari_")]


def package_imports() -> dict[str, set[str]]:
    """{module: the attention_utils modules it imports}, at the top or inside functions, for every module of the package."""
    files = (REPO / "attention_utils").rglob("*.py")
    paths = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in files}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from .y import z
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                named |= {base} | {f"{base}.{alias.name}" for alias in node.names}  # `from attention_utils import runs`
        graph[name] = {target for target in named if target in paths and target != name}
    return graph


@pytest.mark.quick
def test_package_modules_import_downwards_only():
    """No two modules of attention_utils import each other, directly or around a longer circle."""
    import graphlib

    graph = package_imports()
    assert "attention_utils.runs" in graph["attention_utils.zoo"]  # the graph sees imports at all
    assert "attention_utils.evaluations" in graph["attention_utils.results"]  # and those inside functions
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"attention_utils modules import each other: {' -> '.join(error.args[1])}")


@pytest.mark.quick
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_no_package_module(script):
    code = f"import sys, importlib.util\nspec = importlib.util.spec_from_file_location('s', '{REPO / script}')\n"
    code += "module = importlib.util.module_from_spec(spec); sys.modules['s'] = module; spec.loader.exec_module(module)"
    loaded = imported_modules(code)
    assert "s" in loaded
    assert not [m for m in loaded if m.startswith("attention_utils")]


def run_alone(tmp_path, script, *args):
    """The script copied into an empty folder and run there without the attention_utils package."""
    copy = tmp_path / script
    shutil.copy(REPO / script, copy)
    command = [sys.executable, "-c", WITHOUT_PACKAGE, str(copy), *map(str, args)]
    return subprocess.run(command, cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_copied_alone_trains_evaluates_and_checkpoints(tmp_path, script):
    proc = run_alone(tmp_path, script, *TINY, "--total-timesteps", "32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run_dir.glob("*.cleanrl_model")) == ["step_000000032.cleanrl_model"]
    rows = (run_dir / "evals.csv").read_text().splitlines()
    assert rows[0] == "global_step,mean_return,std_return,episode_returns" and rows[1].startswith("32,")
    assert list(run_dir.glob("events.out.tfevents.*")) and (run_dir / "args.json").exists()


@pytest.mark.parametrize(
    "flags, feature",
    [
        (["--capture-video"], "--capture-video and --save-attention"),
        (["--save-attention"], "--capture-video and --save-attention"),
        (["--resume", "x.cleanrl_model"], "--resume"),
        (["--env-id", "Pongg"], "unknown game 'Pongg': suggesting valid names"),
        (["--env-id", "BreakoutInfinite"], "BreakoutInfinite"),
    ],
)
@pytest.mark.parametrize("script", SCRIPTS)
def test_an_optional_feature_without_the_package_fails_in_one_line_before_any_work(tmp_path, script, flags, feature):
    game = [] if "--env-id" in flags else ["--env-id", "Breakout"]
    proc = run_alone(tmp_path, script, *TINY[2:], *game, "--total-timesteps", "32", *flags)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {feature} needs the attention_utils package"), lines[0]
    assert not (tmp_path / "runs").exists()


def main_block(script: str) -> list[str]:
    text = (REPO / script).read_text()
    return text[text.index('if __name__ == "__main__":') :].splitlines()


def function_source(script: str, name: str) -> str:
    text = (REPO / script).read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node)
    raise AssertionError(f"{script} has no function {name}")


@pytest.mark.quick
@pytest.mark.parametrize("script", FEEDFORWARD[1:])
def test_feedforward_scripts_share_their_main_block_word_for_word(script):
    diff = list(difflib.unified_diff(main_block(FEEDFORWARD[0]), main_block(script), lineterm="", n=0))
    assert not diff, "\n".join(diff)


@pytest.mark.quick
@pytest.mark.parametrize("script", SCRIPTS[1:] if SCRIPTS[0] == FEEDFORWARD[0] else SCRIPTS)
def test_scripts_share_their_machinery_word_for_word(script):
    names = SHARED_FUNCTIONS + (FEEDFORWARD_FUNCTIONS if script in FEEDFORWARD else [])
    for name in names:
        assert function_source(script, name) == function_source(FEEDFORWARD[0], name), f"{script}: {name} differs"


@pytest.mark.quick
def test_recurrent_scripts_share_their_main_block_word_for_word():
    diff = list(difflib.unified_diff(main_block(RECURRENT[0]), main_block(RECURRENT[1]), lineterm="", n=0))
    assert not diff, "\n".join(diff)


@pytest.mark.quick
def test_recurrent_main_block_differs_from_the_feedforward_one_only_by_its_recurrent_lines():
    diff = list(difflib.ndiff(main_block(FEEDFORWARD[0]), main_block(RECURRENT[0])))
    assert [line[2:].strip() for line in diff if line.startswith("- ")] == FEEDFORWARD_ONLY_LINES
    assert [line[2:].strip() for line in diff if line.startswith("+ ")] == RECURRENT_ONLY_LINES


@pytest.mark.quick
def test_ruff_check_and_format():
    check = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    form = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert form.returncode == 0, form.stdout + form.stderr


@pytest.mark.quick
def test_planted_mistakes_still_fit_the_code():
    # tests/planted_mistakes.py writes each mistake over code that must still be there, once, and runs a test that exists
    source = (REPO / "tests" / "planted_mistakes.py").read_text()
    mistakes = ast.literal_eval(source[source.index("MISTAKES = [") + len("MISTAKES = ") : source.index("\n]\n") + 2])
    assert len(mistakes) >= 15 and len({m[0] for m in mistakes}) == len(mistakes)
    for name, path, right, wrong, test in mistakes:
        assert (REPO / path).read_text().count(right) == 1, f"{name}: {right!r} is not in {path} exactly once"
        assert right != wrong
        test_file, _, selection = test.partition(" -k ")
        assert (REPO / test_file).is_file(), f"{name}: no {test_file}"
        tests = (REPO / test_file).read_text()
        words = [word for word in selection.strip("'").split(" or ") if word]
        assert all(re.search(rf"def test_\w*{word}", tests) for word in words), f"{name}: {test} selects no test"
