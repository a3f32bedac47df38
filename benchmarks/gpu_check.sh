#!/usr/bin/env bash
# One prepared check of the CUDA path, on a machine with one CUDA GPU, in under 8 minutes:
#   1. a virtual environment over the machine's own torch (CUDA build) and triton, the project installed in it
#   2. the CUDA tests: Triton decode and backward against the torch path, stacked kernels, bf16 autocast,
#      training on the GPU against CPU (benchmarks/gpu_tests.py), and the kernel and stacked-training test files
#   3. W1/W3 against SAE-Lens and sparsify on the GPU (compare_libraries.py --device cuda)
#   4. a stacked sweep of E = 8 against 8 separate dictionaries (bench_stacked.py --members 8)
#   5. the end-to-end job (bench_end_to_end.py) on a SmolLM2-135M-shaped model with random weights
#   6. benchmarks/results/gpu.md: every step's status, time and output
#
# Usage:  benchmarks/gpu_check.sh                 on the GPU machine
#         benchmarks/gpu_check.sh --dry-run       (or GPU_CHECK_CPU=1) every step on CPU at a tiny size
#         benchmarks/gpu_check.sh --prepare-wheels DIR   here, with pip: wheels the GPU machine lacks (cp312)
# Offline machines: set WHEELS=DIR (made by --prepare-wheels) and the installs read only from it. Steps whose
# packages cannot be installed are reported as skipped, with the reason, and the others still run.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=gpu
# Not in the GPU image (its package list: /work/.library/device/KINDS.md); --no-deps, so every one is named.
PROJECT_WHEELS="transformer-lens==3.9.0 beartype better-abc fancy-einsum typeguard transformers-stream-generator
 datasets dill multiprocess plotly gguf"
LIBRARY_WHEELS="sae-lens eai-sparsify natsort simple-parsing docstring-parser"

prepare_wheels() {  # $1: folder; downloads pure-Python or manylinux cp312 wheels, no dependencies
    mkdir -p "$1"
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$1" $PROJECT_WHEELS $LIBRARY_WHEELS
}

case "${1:-}" in
    --prepare-wheels) prepare_wheels "${2:?give a folder}"; exit $? ;;
    --dry-run) MODE=cpu ;;
    "") [[ "${GPU_CHECK_CPU:-0}" == 1 ]] && MODE=cpu ;;
    *) echo "unknown argument $1: expected --dry-run or --prepare-wheels DIR" >&2; exit 2 ;;
esac

if [[ $MODE == gpu ]]; then
    DEVICE=cuda; RESULTS=${GPU_CHECK_RESULTS:-$ROOT/benchmarks/results/gpu.md}
    ROUNDS=3; E2E_TOKENS=262144; E2E_MODEL=smollm2-random; STACK_WORKLOADS=S1,S4; SLOW=1
else
    DEVICE=cpu; RESULTS=${GPU_CHECK_RESULTS:-${TMPDIR:-/tmp}/gpu_check_dry_run.md}
    ROUNDS=1; E2E_TOKENS=4096; E2E_MODEL=random-small; STACK_WORKLOADS=S3
    SLOW=${GPU_CHECK_SLOW:-10}  # time limits x SLOW: a shared 2-core CPU runs the steps far slower than a GPU machine
fi
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
VENV=${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/interp-gpu-venv}
LIBVENV=${GPU_CHECK_LIBVENV:-$LOGS/libvenv}
if [[ $MODE == cpu && -x "$ROOT/.venv/bin/python" ]]; then
    PY=$ROOT/.venv/bin/python  # a dry run uses the project's own environment
else
    PY=$VENV/bin/python
fi
START=$SECONDS
declare -a STEPS=()
export PYTHONUNBUFFERED=1  # a step stopped at its time limit still leaves what it printed in its log
export ROOT MODE DEVICE ROUNDS E2E_TOKENS E2E_MODEL STACK_WORKLOADS LOGS VENV LIBVENV PY PROJECT_WHEELS LIBRARY_WHEELS

pip_install() {  # pip_install PYTHON PACKAGE...: offline from $WHEELS when set, else from the index
    local py=$1; shift
    if [[ -n "${WHEELS:-}" ]]; then
        "$py" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$@"
    else
        "$py" -m pip install -q "$@"
    fi
}

setup_env() {
    if [[ $PY != "$VENV/bin/python" ]]; then
        "$PY" -c "import interp, saes, torch; print('torch', torch.__version__)"
        return
    fi
    python3 -m venv --system-site-packages "$VENV" || return 1
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    "$PY" -c "import transformer_lens, plotly, datasets, gguf" 2>/dev/null || {
        # shellcheck disable=SC2086
        pip_install "$PY" $PROJECT_WHEELS || return 1
    }
    "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" || return 1
    "$PY" -c "import interp, saes, torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print(torch.cuda.get_device_name())"
}

library_env() {  # SAE-Lens and sparsify go into a venv of their own over the same torch
    [[ -x "$LIBVENV/bin/python" ]] && "$LIBVENV/bin/python" -c "import sae_lens, sparsify" 2>/dev/null && return 0
    python3 -m venv --system-site-packages "$LIBVENV" || return 1
    # shellcheck disable=SC2086
    pip_install "$LIBVENV/bin/python" $LIBRARY_WHEELS && "$LIBVENV/bin/python" -c "import sae_lens, sparsify"
}

run_tests() {
    GPU_CHECK_DEVICE=$DEVICE "$PY" -m pytest -q -p no:cacheprovider -x "$ROOT/benchmarks/gpu_tests.py" \
        "$ROOT/tests/kernels" "$ROOT/tests/training/test_stacked.py"
}

compare() {
    library_env || { echo "SAE-Lens/sparsify could not be installed (offline without WHEELS?): not measured"; return 77; }
    "$PY" "$ROOT/benchmarks/compare_libraries.py" --device "$DEVICE" --rounds "$ROUNDS" --venv "$LIBVENV"
}

stacked() { "$PY" "$ROOT/benchmarks/bench_stacked.py" --device "$DEVICE" --members 8 --rounds "$ROUNDS" --workloads "$STACK_WORKLOADS"; }

end_to_end() {
    "$PY" "$ROOT/benchmarks/bench_end_to_end.py" --device "$DEVICE" --model "$E2E_MODEL" --tokens "$E2E_TOKENS" --libraries bare,ours
}

export -f pip_install setup_env library_env run_tests compare stacked end_to_end

step() {  # step NAME SECONDS FUNCTION: run it with a time limit, keep its log, record status and time
    local name=$1 limit=$(($2 * SLOW)) fn=$3 t0=$SECONDS status
    echo "== $name (limit ${limit}s)"
    timeout "$limit" bash -c "$fn" >"$LOGS/$name.log" 2>&1
    case $? in 0) status=ok ;; 124) status="timed out" ;; 77) status=skipped ;; *) status=FAILED ;; esac
    STEPS+=("$name|$status|$((SECONDS - t0))")
    tail -n 3 "$LOGS/$name.log"
}

write_results() {
    {
        echo "# GPU check ($MODE mode, $(date -u '+%Y-%m-%d %H:%M UTC'))"
        echo
        if [[ $MODE == gpu ]]; then
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
        else
            echo "CPU dry run: every step at a tiny size on CPU; no GPU figure here is measured."
        fi
        echo "Total: $((SECONDS - START)) s. Written by benchmarks/gpu_check.sh."
        echo
        echo "| step | status | seconds |"
        echo "|---|---|---|"
        for s in "${STEPS[@]}"; do IFS='|' read -r n st t <<<"$s"; echo "| $n | $st | $t |"; done
        for s in "${STEPS[@]}"; do
            IFS='|' read -r n _ _ <<<"$s"
            printf '\n## %s\n\n```\n' "$n"
            tail -n 40 "$LOGS/$n.log"
            printf '```\n'
        done
    } >"$RESULTS"
    echo "wrote $RESULTS (logs in $LOGS)"
}

cd "$ROOT" || exit 1
step environment 150 setup_env
if [[ ${STEPS[0]} == *"|ok|"* ]]; then
    step cuda-tests 150 run_tests
    step libraries-w1-w3 120 compare
    step stacked-e8 60 stacked
    step end-to-end 90 end_to_end
fi
write_results
[[ "${STEPS[*]}" != *FAILED* && "${STEPS[*]}" != *"timed out"* ]]
