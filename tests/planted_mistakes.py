"""Mistakes the tests were written to catch, planted one at a time: each is written into the code, the test meant to
catch it runs, and the file is restored (also on Ctrl-C). Every line must say CAUGHT. Not collected by pytest.

    python tests/planted_mistakes.py [NAME ...]     # all, or the ones named

It edits the working tree while it runs: do not run it beside other work in the same checkout."""

import pathlib
import shlex
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# (name, file, the right code, the mistake, the test that must fail)
MISTAKES = [
    (
        "gae_ignores_episode_ends",
        "ppo_atari_selfattn.py",
        "delta + gamma * gae_lambda * (1.0 - nextdone) * lastgaelam",
        "delta + gamma * gae_lambda * lastgaelam",
        "tests/test_selfattn_units.py -k compute_gae",
    ),
    (
        "cwra_attends_along_the_wrong_axis",
        "ppo_atari_selfattn.py",
        "out = out + self._attend(qr, kr, vr).permute(0, 3, 2, 1)",
        "out = out + self._attend(qr, kr, vr).permute(0, 3, 1, 2)",
        "tests/test_selfattn_units.py -k perturbation",
    ),
    (
        "fls_receptive_field_stride",
        "ppo_atari_fls.py",
        '"sparse": (36, 8, 0)',
        '"sparse": (36, 4, 0)',
        "tests/test_fls.py -k hot_cell",
    ),
    (
        "topdown_basis_without_odd_functions",
        "ppo_atari_topdown.py",
        "torch.cat([torch.cos(angles), torch.sin(angles)])",
        "torch.cat([torch.cos(angles), torch.cos(angles)])",
        "tests/test_topdown.py -k spatial_basis",
    ),
    (
        "topdown_replay_keeps_state_across_episode_ends",
        "ppo_atari_topdown.py",
        "core_h, state = self.step(step_gates, step_extra, step_keep, state)",
        "core_h, state = self.step(step_gates, step_extra, torch.ones_like(step_keep), state)",
        "tests/test_topdown.py -k 'replay_reproduces or state_is_reset'",
    ),
    (
        "temporal_memory_kept_after_done",
        "ppo_atari_temporal.py",
        "next_valid = key_valid[:, 1:] & (done == 0)",
        "next_valid = key_valid[:, 1:]",
        "tests/test_temporal.py -k 'state_is_emptied or replay_reproduces'",
    ),
    (
        "timesformer_position_dropped",
        "ppo_atari_timesformer.py",
        "embedded + position  # (N, 1, D)",
        "embedded + 0 * position  # (N, 1, D)",
        "tests/test_timesformer.py -k pos_encoding",
    ),
    (
        "nss_without_unit_variance",
        "attention_utils/metrics.py",
        "normalised = (saliency - saliency.mean()) / std",
        "normalised = saliency - saliency.mean()",
        "tests/test_metrics.py",
    ),
    (
        "auto_precision_takes_avx512_for_bf16",
        "ppo_atari_selfattn.py",
        '    if "avx512_bf16" in flags:\n',
        '    if "avx512f" in flags:\n',
        "tests/test_devices.py -k cpus",
    ),
    (
        "gradcam_pp_denominator",
        "attention_utils/gradcam.py",
        "denominator = 2 * gradients**2 + activations.sum((2, 3), keepdim=True) * gradients**3",
        "denominator = 2 * gradients**2 + gradients**3",
        "tests/test_gradcam.py -k grad_cam_plus_plus",
    ),
    (
        "object_mask_one_row_short",
        "attention_utils/objects.py",
        "        masks[kind][r0:r1, c0:c1] = True\n",
        "        masks[kind][r0 : r1 - 1, c0:c1] = True\n",
        "tests/test_objects.py -k grid_mask",
    ),
    (
        "standard_error_with_ddof_0",
        "attention_utils/game_tables.py",
        "np.std(values, ddof=1)",
        "np.std(values, ddof=0)",
        "tests/test_results.py -k standard_errors",
    ),
    (
        "minibatch_divisibility_unchecked",
        "ppo_atari_selfattn.py",
        "args.num_minibatches > 0 and batch_size % args.num_minibatches != 0",
        "False and batch_size % args.num_minibatches != 0",
        "tests/test_selfattn_train.py -k bad_sizes",
    ),
    (
        "resume_repeats_the_last_iteration",
        "ppo_atari_selfattn.py",
        'return checkpoint["global_step"], checkpoint["iteration"] + 1',
        'return checkpoint["global_step"], checkpoint["iteration"]',
        "tests/test_selfattn_train.py -k resume_from_checkpoint_copied",
    ),
    (
        "stopped_eval_only_looks_complete",
        "attention_utils/runs.py",
        "results_path, copy = f\"{base}{'_interrupted' if stopped else ''}.csv\", 1",
        'results_path, copy = f"{base}.csv", 1',
        "tests/test_zoo.py -k stopped_evaluation",
    ),
    (
        "eval_pool_sized_by_the_machine_not_the_affinity",
        "attention_utils/runs.py",
        'return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()',
        "return os.cpu_count()",
        "tests/test_zoo.py -k sizes_its_pool",
    ),
    (
        "script_imports_the_package_at_import_time",
        "ppo_atari_fls.py",
        "import torch\n",
        "import torch\nimport attention_utils.metrics  # noqa\n",
        "tests/test_layout.py -k script_imports_no_package_module",
    ),
]
names = sys.argv[1:]
unknown = set(names) - {mistake[0] for mistake in MISTAKES}
if unknown:
    sys.exit(f"unknown mistake(s) {sorted(unknown)}; known: {[mistake[0] for mistake in MISTAKES]}")
for name, path, old, new, test in MISTAKES:
    if names and name not in names:
        continue
    f = REPO / path
    text = f.read_text()
    assert text.count(old) == 1, f"{name}: the right code is no longer found once in {path}; update this list"
    f.write_text(text.replace(old, new, 1))
    start = time.time()
    try:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-x", *shlex.split(test)]
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    finally:
        f.write_text(text)
    summary = ([line for line in proc.stdout.splitlines() if line.strip()] or ["(no output)"])[-1]
    verdict = "CAUGHT" if proc.returncode == 1 else f"MISSED (pytest exit {proc.returncode})"
    print(f"{name:48s} {verdict}  {test}  [{summary}, {time.time() - start:.0f} s]", flush=True)
