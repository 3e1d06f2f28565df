#!/usr/bin/env bash
# Every GPU check of the project in one run, most important first, each step under
# its own time limit, so that a cut-short run still leaves the earlier results.
#
# Usage, from the repository root of a machine with a CUDA GPU:
#
#     bash benchmarks/gpu_session.sh [OUTDIR]      # about 7 minutes on an H200
#
# Steps (logs in OUTDIR, default $OUT or /tmp/sktopk_gpu):
#   env.log          the card, driver and package versions
#   tests_cuda.log   the test files with CUDA-only tests (kernel, operator, losses, sparse sampler)
#   bench_losses.log loss timings on trained-network and cosine scores (auto, dense, sparse, CE)
#   gpu_check.log    benchmarks/gpu_check.py: the Triton kernel's checks, timings, memory
#   profile.log      benchmarks/profile_cuda_loss.py: where a loss call's time goes
#   bench_fit.log    epoch times of the estimators on the GPU, backward on the calling thread
#                    (sktopk's choice) and in autograd's worker thread, alternated
#   suite.log        the whole test suite with the GPU visible (estimators default to it)
#
# Wheels of missing packages (scikit-learn, skorch, pytopk) can be placed in .whl/:
# they are installed into a private folder first.
set -u
OUTDIR=${1:-${OUT:-/tmp/sktopk_gpu}}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 SKTOPK_CACHE_DIR=/tmp/sktopk_cache
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/sktopk_site .whl/*.whl || echo "wheel install failed"
    export PYTHONPATH=/tmp/sktopk_site:$PWD
else
    export PYTHONPATH=$PWD
fi
START=$(date +%s)

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log to OUTDIR/NAME.log, print its tail
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >> "$OUTDIR/$name.log" 2>&1
    rc=$?
    echo "=== $name: rc=$rc, $(( $(date +%s) - t0 )) s (limit $limit s), $(( $(date +%s) - START )) s in all"
    grep -E "^(FAILED|ERROR)|passed|failed|Error|FAIL|PASS" "$OUTDIR/$name.log" | tail -n 25
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 - <<'EOF'
import platform, sklearn, skorch, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "sklearn", sklearn.__version__, "skorch", skorch.__version__)
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton missing:", exc)
print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0))
from sktopk import _cpu_kernel
print("CPU kernel:", _cpu_kernel.unavailable_reason() or "compiled")
EOF
} > "$OUTDIR/env.log" 2>&1
cat "$OUTDIR/env.log"

step tests_cuda 150 python3 -m pytest -q -p no:cacheprovider -n 8 -rfE \
    tests/test_triton_perturbed.py tests/test_perturbed.py tests/test_topk_hinge.py \
    tests/test_sparse_perturbed.py tests/test_ldam.py
step bench_losses 110 python3 benchmarks/bench_losses.py --device cuda --regime trained \
    --classes 1000 10000 100000 --repeats 15 --memory
step bench_losses 60 python3 benchmarks/bench_losses.py --device cuda --regime cosine \
    --classes 1000 10000 --repeats 15
step gpu_check 170 python3 benchmarks/gpu_check.py --budget-s 90 --repeats 10
step profile 60 python3 benchmarks/profile_cuda_loss.py
for mode in "" --autograd-worker-thread "" --autograd-worker-thread; do
    step bench_fit 60 python3 benchmarks/bench_fit.py --device cuda --threads 4 --classes 1000 \
        --sktopk-only --imbalanced --epochs 2 $mode
done
step suite 200 python3 -m pytest -q -p no:cacheprovider -n 14 -rfE --timeout 120 tests
