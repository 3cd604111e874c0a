#!/usr/bin/env bash
# The CUDA checks of the performance issue, as one script for a machine with a GPU, CUDA builds
# of torch and jax, pytest and (optionally) optax and torchvision:
#   1. the catalogue's tests with torch's and jax's arrays on the GPU (UNILOSSES_TEST_DEVICE);
#   2. the benchmark on the GPU: torch eager, jax.jit, torch.compile (inductor), against their
#      own losses, with the HBM-bandwidth floor (a device-to-device copy).
# Each part runs under its own time limit (seconds, below; LIMIT_SCALE multiplies them), so one
# that overruns costs its own results only; the benchmark reports the jobs it finished.
#
#   OUT=results-dir bash benchmarks/cuda.sh
#   PARTS="native blocks" OUT=results-dir bash benchmarks/cuda.sh     # some parts only
#
# unilosses is taken from src/ (PYTHONPATH); array-api-compat must be importable.  Results:
# each part's results.md in $OUT, logs and JSON too in $OUT/cuda-results.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmark-results/cuda}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
SCALE=${LIMIT_SCALE:-1}

bundle() { tar czf "$OUT/cuda-results.tar.gz" -C "$WORK" . 2>/dev/null; }

PARTS=${PARTS:-tests native torch-eager blocks jax-large torch-compiled jax-small torch-nochecks}
wanted() { [[ " $PARTS " == *" $1 "* ]]; }

part() {  # part NAME LIMIT COMMAND...: run, keep the log, print its end
  local name=$1 limit=$(( $2 * SCALE )) t0=$SECONDS rc
  shift 2
  wanted "$name" || return 0
  echo "== $name (limit ${limit} s)"
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( SECONDS - t0 )) s"
  grep -E "passed|failed|error|DISAGREES|interrupted" "$WORK/$name.log" | tail -n 6
  [ -f "$WORK/$name/results.md" ] && cp "$WORK/$name/results.md" "$OUT/$name.md"
  bundle
}

bench() {  # bench NAME LIMIT ARGS...: the benchmark on the GPU, which stops starting new
  local name=$1 limit=$2  # measurements 25 s before the limit and reports what it finished
  shift 2
  part "$name" "$limit" python3 -m benchmarks --device cuda --bandwidth-mb 2000 \
    --time-limit $(( limit * SCALE - 25 )) --out "$WORK/$name" "$@"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import sys, torch, jax; print(sys.version.split()[0], 'torch', torch.__version__,
torch.cuda.get_device_name(), 'jax', jax.__version__, jax.devices())"
} > "$WORK/gpu.txt" 2>&1
cat "$WORK/gpu.txt"

# 1. correctness on the GPU (jax must not take 75% of the card while torch shares it); the
#    package's pytest plugin is named when unilosses is not installed, xdist used if there
plugin=() xdist=()
python3 -c "from importlib.metadata import entry_points as e
raise SystemExit(any(p.name == 'unilosses' for p in e(group='pytest11')))" \
  && plugin=(-p unilosses.testing.plugin)
python3 -c "import xdist" 2>/dev/null && xdist=(-n 8)
part tests 80 env UNILOSSES_TEST_DEVICE=cuda OMP_NUM_THREADS=2 XLA_PYTHON_CLIENT_PREALLOCATE=false \
  python3 -m pytest -q -p no:cacheprovider "${plugin[@]}" "${xdist[@]}" -k "torch or jax" \
  tests/test_catalogue_losses.py tests/test_elementwise.py tests/test_categorical.py \
  tests/test_catalogue_edges.py tests/test_catalogue_peers.py
#    torch's block-wise sums and modules on the GPU
#    and the fused closed forms (inductor's Triton kernels; each compiles for seconds)
part native 150 python3 -m pytest -q -p no:cacheprovider "${plugin[@]}" \
  tests/test_native.py::test_blockwise_on_cuda_takes_the_device_block \
  tests/test_native.py::test_fused_on_cuda tests/test_torch_modules.py::test_cuda
cat "$WORK"/tests.log "$WORK"/native.log > "$OUT/tests.log" 2>/dev/null

# 2. the benchmark: every loss eagerly on torch (sizes and the focal shape), jax.jit, then
#    torch.compile on the bandwidth-bound sizes (each compile takes seconds)
bench torch-eager 160 --backends torch --modes eager --sizes 16,1e3,1e6,1.6e7 --focal-shape
part blocks 150 python3 -m benchmarks.blocks --device cuda --variants fused,24 \
  --sizes 1e3,1e5,1e6,1.6e7,8x19x384x384
[ -f "$WORK/blocks.log" ] && grep "^|" "$WORK/blocks.log" | awk '!seen[$0]++' > "$OUT/blocks.md"
bench jax-large 100 --backends jax --modes compiled --sizes 1e6,1.6e7 --focal-shape
bench torch-compiled 140 --backends torch --modes compiled --torch-compile --sizes 1.6e7 \
  --losses mse,huber,binary_cross_entropy_with_logits,categorical_cross_entropy_with_logits,sparse_categorical_cross_entropy_with_logits,binary_focal_loss_with_logits,anchor_focal_loss_with_logits
bench jax-small 70 --backends jax --modes compiled --sizes 16,1e3
#    what the value checks cost on a GPU (each reads the data back: one synchronisation)
bench torch-nochecks 40 --backends torch --modes eager --sizes 16,1e3 --no-checks
cp "$WORK/gpu.txt" "$OUT/gpu.txt"
bundle
echo "== done"
