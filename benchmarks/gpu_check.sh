#!/usr/bin/env bash
# The GPU check: on a CUDA machine, every script (and every top-down / temporal agent) trains a few iterations with
# --precision auto (must resolve to bf16 on compute capability >= 8.0), fp32 and --compile; a checkpoint copied into
# a new folder resumes on the GPU and once onto the CPU; the tools load a CUDA checkpoint; then an SPS table at the
# scripts' default sizes. One PASS/FAIL line per check, exit 1 if any failed. Meant to take under 10 minutes.
#
#   bash benchmarks/gpu_check.sh
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_ONLY=selfattn_NA GPU_CHECK_SPS_ITERATIONS=0 bash benchmarks/gpu_check.sh
#     (the same steps on a CPU, for one agent and without the table: checks this script itself)
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
ONLY=${GPU_CHECK_ONLY:-}
SPS_ITERATIONS=${GPU_CHECK_SPS_ITERATIONS:-8}
REPO=$PWD
WORK=$(mktemp -d)
export WANDB_MODE=offline PYTHONPATH=$PWD
FAILED=0

pass() { printf 'PASS  %s\n' "$1"; }
fail() {
    printf 'FAIL  %s\n' "$1"
    FAILED=$((FAILED + 1))
}

# name | script | its flags: every script, every top-down / temporal agent
AGENTS=(
    "selfattn_NA|ppo_atari_selfattn.py|--self-attn NA"
    "selfattn_CWRCA|ppo_atari_selfattn.py|--self-attn CWRCA --ada-attn alpha_beta"
    "fls_sparse|ppo_atari_fls.py|--arch sparse_fls"
    "fls_dense|ppo_atari_fls.py|--arch dense_fls"
    "timesformer|ppo_atari_timesformer.py|"
    "topdown|ppo_atari_topdown.py|--query-mode topdown"
    "topdown_fixed|ppo_atari_topdown.py|--query-mode fixed"
    "topdown_rgb|ppo_atari_topdown.py|--query-mode topdown --frame-input rgb"
    "resnet_lstm|ppo_atari_topdown.py|--agent resnet_lstm"
    "adaptive|ppo_atari_temporal.py|--arch adaptive --adaptive-span"
    "spatiotemporal|ppo_atari_temporal.py|--arch spatiotemporal"
)
# 2 iterations of 4 envs x 32 steps, an evaluation and a checkpoint after each
TINY="--env-id Breakout --num-envs 4 --num-steps 32 --num-minibatches 2 --update-epochs 2 --total-timesteps 256
      --eval-episodes 1 --eval-freq 128 --save-freq 128 --torch-threads 2 --env-threads 2"
[ "$DEVICE" = cpu ] && TINY="$TINY --no-cuda"

read -r GPU CAPABILITY TORCH < <("$PYTHON" -c '
import torch
props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
print(props.name.replace(" ", "_") if props else "none", f"{props.major}.{props.minor}" if props else "0.0", torch.__version__)')
echo "device: $GPU (compute capability $CAPABILITY), torch $TORCH, checking on $DEVICE; logs in $WORK"
if [ "$DEVICE" = cuda ] && [ "$GPU" = none ]; then
    fail "a CUDA device is visible to torch"
    exit 1
fi
expected_precision() { # what --precision auto must resolve to
    if [ "$DEVICE" = cpu ]; then "$PYTHON" -c 'import torch, ppo_atari_selfattn as s; print("bf16" if s.native_bf16(torch.device("cpu")) else "fp32")'
    elif [ "${CAPABILITY%%.*}" -ge 8 ]; then echo bf16; else echo fp32; fi
}
EXPECTED=$(expected_precision)

selected() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# train: every agent in one mode, all at once (each with 2 torch and 2 envpool threads), then one line each
train_all() { # mode, extra flags
    local mode=$1 extra=$2 entry name script flags
    for entry in "${AGENTS[@]}"; do
        IFS="|" read -r name script flags <<<"$entry"
        selected "$name" || continue
        mkdir -p "$WORK/$mode/$name"
        (cd "$WORK/$mode/$name" && timeout 400 "$PYTHON" "$REPO/$script" $flags $TINY $extra >log.txt 2>&1; echo $? >rc) &
    done
    wait
    for entry in "${AGENTS[@]}"; do
        IFS="|" read -r name script flags <<<"$entry"
        selected "$name" || continue
        local dir="$WORK/$mode/$name" precision
        if [ "$(cat "$dir/rc")" != 0 ]; then
            fail "$name trains ($mode): exit $(cat "$dir/rc"): $(grep -m1 -E 'error|Error' "$dir/log.txt" || tail -n 1 "$dir/log.txt")"
            continue
        fi
        precision=$("$PYTHON" -c 'import json, sys, glob; print(json.load(open(glob.glob(sys.argv[1] + "/runs/*/args.json")[0]))["precision"])' "$dir")
        if [ "$mode" = auto ] && [ "$precision" != "$EXPECTED" ]; then
            fail "$name trains (auto): precision resolved to $precision, expected $EXPECTED"
        else
            pass "$name trains ($mode, precision $precision)"
        fi
    done
}
train_all auto ""
train_all fp32 "--precision fp32"
train_all compile "--compile"

# resume: the step-128 checkpoint of the auto run copied into a new folder, on the device and onto the CPU
for entry in "${AGENTS[@]}"; do
    IFS="|" read -r name script flags <<<"$entry"
    selected "$name" || continue
    source_dir=$(ls -d "$WORK/auto/$name"/runs/* 2>/dev/null | head -n 1)
    [ -f "$source_dir/step_000000128.cleanrl_model" ] || { fail "$name resumes: no step-128 checkpoint from the auto run"; continue; }
    for target in device cpu; do
        copy="$WORK/resume_$target/$name"
        mkdir -p "$copy" && cp "$source_dir/step_000000128.cleanrl_model" "$copy/"
        onto=$([ "$target" = cpu ] && echo "--no-cuda" || true)
        if timeout 300 "$PYTHON" "$script" --resume "$copy" --torch-threads 2 --env-threads 2 $onto >"$copy/log.txt" 2>&1 &&
            [ -f "$copy/step_000000256.cleanrl_model" ]; then
            note=$(grep -m1 "continuing on" "$copy/log.txt" | cut -c1-60)
            pass "$name resumes from a copied checkpoint onto $target${note:+ ($note...)}"
        else
            fail "$name resumes onto $target: $(grep -m1 -E 'error|Error' "$copy/log.txt" || tail -n 1 "$copy/log.txt")"
        fi
    done
done

# the tools load a checkpoint written on the device (weights on the device, loaded onto the CPU and back)
for entry in "${AGENTS[@]}"; do
    IFS="|" read -r name script flags <<<"$entry"
    selected "$name" || continue
    checkpoint=$(ls "$WORK/auto/$name"/runs/*/step_000000256.cleanrl_model 2>/dev/null | head -n 1)
    [ -n "$checkpoint" ] || { fail "$name: tools: no final checkpoint"; continue; }
    if timeout 300 "$PYTHON" -c '
import sys, torch
from attention_utils.checkpoints import load_agent
device = "cuda" if torch.cuda.is_available() and sys.argv[2] == "cuda" else "cpu"
loaded = load_agent(sys.argv[1], device)
assert next(loaded.agent.parameters()).device.type == device' "$checkpoint" "$DEVICE" >"$WORK/tools_$name.log" 2>&1 &&
        timeout 300 "$PYTHON" -m attention_utils.enjoy --checkpoint "$checkpoint" --episodes 1 --out "$WORK/enjoy_$name" >>"$WORK/tools_$name.log" 2>&1; then
        pass "$name: attention_utils loads its checkpoint ($DEVICE and cpu) and plays a recorded episode"
    else
        fail "$name: tools: $(tail -n 1 "$WORK/tools_$name.log")"
    fi
done

# throughput at each script's default sizes
if [ "$SPS_ITERATIONS" -gt 0 ]; then
    echo
    echo "SPS at default sizes, $SPS_ITERATIONS iterations each ($GPU, torch $TORCH):"
    for spec in "ppo_atari_selfattn.py self-attn NA CWRCA" "ppo_atari_fls.py arch sparse_fls dense_fls" \
        "ppo_atari_timesformer.py precision auto" "ppo_atari_topdown.py query-mode topdown" \
        "ppo_atari_temporal.py arch adaptive spatiotemporal"; do
        read -r script flag variants <<<"$spec"
        if ! timeout 420 "$PYTHON" benchmarks/sps.py --script "$script" --variant-flag "$flag" --variants $variants \
            --iterations "$SPS_ITERATIONS" 2>"$WORK/sps_$script.log"; then
            fail "SPS of $script: $(tail -n 1 "$WORK/sps_$script.log")"
        fi
    done
fi

echo
if [ "$FAILED" -eq 0 ]; then echo "gpu_check: all PASS"; else echo "gpu_check: $FAILED FAIL"; fi
[ "$FAILED" -eq 0 ]
