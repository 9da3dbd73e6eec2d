"""End-to-end tests of ppo_atari_selfattn.py: tiny training runs through the real entry point."""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    BATCH,
    BREAKOUT_ACTIONS,
    CHECKPOINT_KEYS,
    EVAL_EPISODES,
    EVALS_HEADER,
    TINY,
    VARIANTS,
    assert_ok,
    checkpoint_files,
    checkpoint_step,
    describe,
    load_checkpoint,
    read_evals,
    read_scalars,
    run_script,
    single_run_dir,
)

SEED = 1
NUM_ITERATIONS = 3
TOTAL = NUM_ITERATIONS * BATCH  # 96 agent steps: evaluations and checkpoints at 32, 64, 96
EXPECTED_STEPS = [BATCH * i for i in range(1, NUM_ITERATIONS + 1)]
REQUIRED_SCALARS = [
    "losses/value_loss",
    "losses/policy_loss",
    "eval/mean_return",
    "perf/env_s",
    "perf/policy_s",
    "perf/update_s",
    "perf/other_s",
    "charts/SPS",
]


def train_args(variant, seed=SEED, total=TOTAL, *extra):
    return [*TINY, "--self-attn", variant, "--seed", seed, "--total-timesteps", total, *extra]


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory):
    """variant -> (cwd, CompletedProcess) of a tiny 3-iteration run; each run happens once, on first use."""
    cache = {}

    def get(variant):
        if variant not in cache:
            cwd = tmp_path_factory.mktemp(f"train_{variant}")
            cache[variant] = (cwd, run_script(train_args(variant), cwd))
        return cache[variant]

    return get


def finished_run(variant_runs, variant):
    cwd, proc = variant_runs(variant)
    assert_ok(proc)
    return single_run_dir(cwd, variant, SEED)


# ---------------------------------------------------------------------------------------------------
# every variant trains end to end


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_end_to_end(script, variant_runs, variant):
    cwd, proc = variant_runs(variant)
    assert_ok(proc)
    run_dir = single_run_dir(cwd, variant, SEED)
    # {game}__{exp_name}__{variant}__{seed}__{unix time}, "-N" appended when that folder already exists
    assert re.fullmatch(rf"Breakout__ppo_atari_selfattn__{variant}__{SEED}__\d+(-\d+)?", run_dir.name), run_dir.name

    # tensorboard
    scalars = read_scalars(run_dir)
    missing = [t for t in REQUIRED_SCALARS if t not in scalars]
    assert not missing, f"scalars missing from tensorboard: {missing}; present: {sorted(scalars)}"
    for tag in REQUIRED_SCALARS:
        steps = [s for s, _ in scalars[tag]]
        assert steps == EXPECTED_STEPS, (tag, steps)
        assert all(math.isfinite(v) for _, v in scalars[tag]), (tag, scalars[tag])
    for tag in ("perf/env_s", "perf/policy_s", "perf/update_s"):
        assert all(v > 0 for _, v in scalars[tag]), (tag, scalars[tag])
    assert all(v > -1e-3 for _, v in scalars["perf/other_s"]), scalars["perf/other_s"]
    assert all(v >= 0 for _, v in scalars["charts/SPS"]), scalars["charts/SPS"]
    assert all(v >= 0 for _, v in scalars["losses/value_loss"]), scalars["losses/value_loss"]

    # args.json
    saved_args = json.loads((run_dir / "args.json").read_text())
    assert saved_args["self_attn"] == variant
    assert saved_args["env_id"] == "Breakout"
    assert saved_args["seed"] == SEED
    assert saved_args["total_timesteps"] == TOTAL
    assert saved_args["batch_size"] == BATCH
    assert saved_args["minibatch_size"] == BATCH // 2
    assert saved_args["num_iterations"] == NUM_ITERATIONS

    # evals.csv
    header, rows = read_evals(run_dir)
    assert header == EVALS_HEADER
    assert [int(r[0]) for r in rows] == EXPECTED_STEPS
    tb_means = dict(scalars["eval/mean_return"])
    for row in rows:
        assert len(row) == 4, row
        returns = [float(x) for x in row[3].split(";")]
        assert len(returns) == EVAL_EPISODES, row
        assert all(r >= 0 for r in returns), row  # Breakout scores are never negative
        assert float(row[1]) == pytest.approx(np.mean(returns), abs=1e-4), row
        assert float(row[2]) == pytest.approx(np.std(returns), abs=1e-4), row
        assert tb_means[int(row[0])] == pytest.approx(float(row[1]), abs=1e-3), (row, tb_means)

    # checkpoints
    ckpts = checkpoint_files(run_dir)
    assert [checkpoint_step(p) for p in ckpts] == EXPECTED_STEPS, ckpts
    for path in ckpts:
        ckpt = load_checkpoint(path)
        assert CHECKPOINT_KEYS <= set(ckpt), sorted(ckpt)
        assert ckpt["global_step"] == checkpoint_step(path)
        assert ckpt["iteration"] == ckpt["global_step"] // BATCH
        assert ckpt["args"]["self_attn"] == variant
        assert {"python", "numpy", "torch"} <= set(ckpt["rng"])
        has_attention = any(k.startswith("attention.") for k in ckpt["model"])
        assert has_attention == (variant != "NA"), sorted(ckpt["model"])
        agent = script.Agent(BREAKOUT_ACTIONS, variant)
        agent.load_state_dict(ckpt["model"])  # strict: exactly this variant's parameters
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
        optimizer.load_state_dict(ckpt["optimizer"])
    first, last = load_checkpoint(ckpts[0])["model"], load_checkpoint(ckpts[-1])["model"]
    assert not torch.equal(first["fc.weight"], last["fc.weight"]), "weights did not change between checkpoints"


# ---------------------------------------------------------------------------------------------------
# ada-attn, attention picture, video: one short CWCA run


@pytest.fixture(scope="module")
def cwca_extras_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwca_extras")
    proc = run_script(train_args("CWCA", SEED, BATCH, "--ada-attn", "alpha_beta", "--save-attention", "--capture-video"), cwd)
    assert_ok(proc)
    return single_run_dir(cwd, "CWCA+alpha_beta", SEED)  # the variant name says the scalars are on


def test_ada_attn_alpha_beta_parameters(script, cwca_extras_run, variant_runs):
    ckpts = checkpoint_files(cwca_extras_run)
    assert [checkpoint_step(p) for p in ckpts] == [BATCH]
    ckpt = load_checkpoint(ckpts[-1])
    model = ckpt["model"]
    for name in ("attention.alpha", "attention.beta"):
        assert name in model, sorted(model)
        assert model[name].shape == torch.Size([]), (name, model[name].shape)
        assert torch.isfinite(model[name])
    assert ckpt["args"]["ada_attn"] == "alpha_beta"
    agent = script.Agent(BREAKOUT_ACTIONS, "CWCA", "alpha_beta")
    agent.load_state_dict(model)
    # without --ada-attn the same variant has neither scalar
    plain = load_checkpoint(checkpoint_files(finished_run(variant_runs, "CWCA"))[-1])["model"]
    assert "attention.alpha" not in plain and "attention.beta" not in plain


def test_save_attention_png(cwca_extras_run):
    import matplotlib.image as mpimg

    pngs = sorted(cwca_extras_run.glob("attention_step_*.png"))
    assert [p.name for p in pngs] == [f"attention_step_{BATCH:09d}.png"]
    image = mpimg.imread(pngs[0])
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    height, width = image.shape[:2]
    assert height >= 200 and width >= 200, image.shape
    assert height > width, image.shape  # one row per state, three panels per row, several rows
    assert float(image[..., :3].std()) > 0.01, "attention picture is blank"


def test_capture_video_mp4(cwca_extras_run):
    import imageio.v3 as iio

    videos = sorted((cwca_extras_run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == [f"eval_step_{BATCH:09d}.mp4"]
    assert videos[0].stat().st_size > 0
    frame = iio.imread(videos[0], index=0)
    # the ALE screen, and beside it the same screen under the attention map
    assert frame.shape == (210, 320, 3) and frame.dtype == np.uint8, (frame.shape, frame.dtype)
    assert frame.std() > 0, "first video frame is blank"
    screen, overlay = frame[:, :160].astype(int), frame[:, 160:].astype(int)
    assert np.abs(screen - overlay).mean() > 10, "no attention drawn on the right half"
    num_frames = sum(1 for _ in iio.imiter(videos[0]))
    assert num_frames > 10, num_frames  # a whole Breakout game, not a single frame


# ---------------------------------------------------------------------------------------------------
# resume


@pytest.fixture
def copied_run(variant_runs, tmp_path):
    """A copy of the finished NA run (checkpoints at 32, 64, 96) under tmp_path/runs/."""
    src = finished_run(variant_runs, "NA")
    dst = tmp_path / "runs" / src.name
    shutil.copytree(src, dst)
    return dst


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_resume_refuses_when_later_checkpoints_exist(copied_run, tmp_path):
    before = snapshot(copied_run)
    ckpt = copied_run / f"step_{BATCH:09d}.cleanrl_model"
    proc = run_script(["--resume", ckpt, "--torch-threads", "1", "--env-threads", "1"], tmp_path)
    assert proc.returncode != 0, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    for later in EXPECTED_STEPS[1:]:
        assert f"step_{later:09d}.cleanrl_model" in lines[0], lines[0]
    assert "new folder" in lines[0], lines[0]
    assert snapshot(copied_run) == before, "a refused resume changed the run folder"


def test_resume_from_final_checkpoint_cannot_extend_training(copied_run, tmp_path):
    # Current contract: total_timesteps (like every experiment setting) comes from the checkpoint, so a
    # finished run cannot be extended with a larger --total-timesteps; the script says so in one line.
    before = snapshot(copied_run)
    ckpt = copied_run / f"step_{TOTAL:09d}.cleanrl_model"
    proc = run_script(
        ["--resume", ckpt, "--total-timesteps", 2 * TOTAL, "--torch-threads", "1", "--env-threads", "1"], tmp_path
    )
    assert proc.returncode != 0, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert str(TOTAL) in lines[0], lines[0]
    assert snapshot(copied_run) == before, "a refused resume changed the run folder"


def test_resume_from_checkpoint_copied_into_new_folder(copied_run, tmp_path):
    original = read_scalars(copied_run)
    branch = tmp_path / "runs" / "branch"
    branch.mkdir()
    shutil.copy(copied_run / f"step_{BATCH:09d}.cleanrl_model", branch)
    # --total-timesteps differs from the checkpoint: it must be ignored (settings come from the checkpoint)
    proc = run_script(
        [
            "--resume",
            "runs/branch/" + f"step_{BATCH:09d}.cleanrl_model",
            "--total-timesteps",
            10 * TOTAL,
            "--torch-threads",
            "1",
            "--env-threads",
            "1",
        ],
        tmp_path,
    )
    assert_ok(proc)
    assert "total_timesteps" in proc.stdout, describe(proc)  # the "ignoring command-line ..." notice
    assert not (tmp_path / "runs" / "branch" / "runs").exists()

    resumed_steps = EXPECTED_STEPS[1:]  # 64, 96
    header, rows = read_evals(branch)
    assert header == EVALS_HEADER
    assert [int(r[0]) for r in rows] == resumed_steps
    scalars = read_scalars(branch)
    for tag in ("losses/value_loss", "eval/mean_return", "charts/learning_rate", "charts/clip_coef"):
        assert [s for s, _ in scalars[tag]] == resumed_steps, (tag, scalars[tag])
    # the annealing schedules continue where the checkpoint left them
    for tag in ("charts/learning_rate", "charts/clip_coef"):
        assert scalars[tag] == [(s, v) for s, v in original[tag] if s > BATCH], (tag, scalars[tag], original[tag])

    ckpts = checkpoint_files(branch)
    assert [checkpoint_step(p) for p in ckpts] == EXPECTED_STEPS
    final = load_checkpoint(ckpts[-1])
    assert final["global_step"] == TOTAL
    assert final["iteration"] == NUM_ITERATIONS
    assert final["args"]["total_timesteps"] == TOTAL
    assert json.loads((branch / "args.json").read_text())["total_timesteps"] == TOTAL
    resumed_from = load_checkpoint(branch / f"step_{BATCH:09d}.cleanrl_model")["model"]
    assert not torch.equal(resumed_from["fc.weight"], final["model"]["fc.weight"])


# ---------------------------------------------------------------------------------------------------
# bad inputs: non-zero exit, short message, nothing started


def check_refused_early(proc, cwd):
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.stderr.strip(), describe(proc)
    assert not (Path(cwd) / "runs").exists(), "a run folder was created for a refused command line"


@pytest.mark.quick
def test_unknown_env_id_names_the_close_game(tmp_path):
    proc = run_script([*TINY, "--env-id", "Pongg", "--total-timesteps", BATCH], tmp_path)
    check_refused_early(proc, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, describe(proc)
    assert "Pongg" in lines[0], lines[0]
    assert "Pong" in lines[0].replace("Pongg", ""), lines[0]  # the close valid game is named


@pytest.mark.quick
def test_bad_variant_lists_valid_choices(tmp_path):
    proc = run_script([*TINY, "--self-attn", "XYZ", "--total-timesteps", BATCH], tmp_path)
    check_refused_early(proc, tmp_path)
    assert "XYZ" in proc.stderr
    for choice in VARIANTS:
        assert f"'{choice}'" in proc.stderr, (choice, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) <= 12, describe(proc)


@pytest.mark.quick
@pytest.mark.parametrize(
    "extra, words",
    [
        (["--total-timesteps", BATCH // 2], ["total-timesteps", str(BATCH // 2), str(BATCH)]),
        (["--total-timesteps", BATCH, "--num-minibatches", 3], ["num-minibatches", "3"]),
    ],
    ids=["total-timesteps-below-one-batch", "minibatches-do-not-divide-batch"],
)
def test_bad_sizes_refused(tmp_path, extra, words):
    proc = run_script([*TINY, *extra], tmp_path)
    check_refused_early(proc, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, describe(proc)
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.quick
@pytest.mark.parametrize("env_id", ["Pong", "Pong-v5", "PongNoFrameskip-v4", "ALE/Pong-v5"])
def test_parse_game_forms(script, env_id):
    assert script.parse_game(env_id) == "Pong"


@pytest.mark.quick
@pytest.mark.parametrize("env_id", ["Pongg", "ALE/Pongg-v5", "pong"])
def test_parse_game_unknown_exits_naming_pong(script, env_id):
    with pytest.raises(SystemExit) as info:
        script.parse_game(env_id)
    message = str(info.value.code)
    assert isinstance(info.value.code, str) and "\n" not in message, message
    assert env_id in message
    assert "Pong" in message.replace(env_id, ""), message


# ---------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_losses_other_seed_differs(variant_runs, tmp_path):
    first = read_scalars(finished_run(variant_runs, "NA"))
    (tmp_path / "again").mkdir()
    (tmp_path / "other").mkdir()
    again_proc = run_script(train_args("NA", SEED), tmp_path / "again")
    assert_ok(again_proc)
    other_proc = run_script(train_args("NA", SEED + 1), tmp_path / "other")
    assert_ok(other_proc)
    again = read_scalars(single_run_dir(tmp_path / "again", "NA", SEED))
    other = read_scalars(single_run_dir(tmp_path / "other", "NA", SEED + 1))
    for tag in ("losses/policy_loss", "losses/value_loss"):
        assert first[tag][0][0] == again[tag][0][0] == other[tag][0][0] == BATCH
        assert first[tag][0][1] == again[tag][0][1], (tag, first[tag][0], again[tag][0])  # exact
        assert first[tag][0][1] != other[tag][0][1], (tag, first[tag][0], other[tag][0])
