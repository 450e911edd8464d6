#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one call (a lent single-GPU machine):
#
#   OUT=/tmp/gpu_bench bash benchmarks/gpu_suite.sh
#
# Runs from the repository root without installing the package (PYTHONPATH=.), on the machine's
# own jax[cuda] / torch. Python packages the machine lacks can sit as wheels in .whl/ (see
# docs/benchmarks.md); they are installed to /tmp/site first. Each stage has its own time limit
# and its log goes to $OUT, so one failing stage does not lose the others.
set -u
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
# JAX and torch share the card in one process: keep JAX from taking 75 % of it up front.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
PY=${PY:-python3}

if ls .whl/*.whl >/dev/null 2>&1; then
  # Only what the machine lacks: its own jax/flax/optax stay (they match its jaxlib).
  ls .whl/*.whl | grep -vE '/(flax|optax)-' | xargs $PY -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --target /tmp/site && export PYTHONPATH=.:/tmp/site
fi

stage() {  # stage NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "=== $name: $*" | tee -a "$OUT/suite.log"
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "=== $name: rc $? in $((SECONDS - t0)) s" | tee -a "$OUT/suite.log"
  tail -n 12 "$OUT/$name.log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  $PY -c "import sys, jax, flax, optax, torch, transformers; print(sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', \
torch.__version__, 'transformers', transformers.__version__, jax.devices())"
} 2>&1 | tee "$OUT/env.log"

# The project's imports with the machine's flax; fall back to the pinned flax/optax wheels.
if ! $PY -c "from synthagent_jax.inference import sampler; from synthagent_jax.rewards import pyes_judge" \
    >> "$OUT/env.log" 2>&1; then
  echo "machine's flax failed to import the package (see env.log); using the pinned wheels" \
      | tee -a "$OUT/env.log"
  ls .whl/flax-*.whl .whl/optax-*.whl | xargs $PY -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --target /tmp/site_pinned && export PYTHONPATH=.:/tmp/site_pinned:/tmp/site
fi

stage sampler_bf16 ${SAMPLER_S:-150} $PY -m benchmarks.sampler_throughput --models=tiny,qwen_0_5b \
    --dtype=bfloat16 --repeats=3
stage judge_0_5b ${JUDGE_S:-150} $PY -m benchmarks.judge_throughput --dims=qwen_0_5b \
    --dtype=bfloat16 --trajectories=64 --batch=64 --repeats=3
stage sampler_fp32 ${SAMPLER32_S:-90} $PY -m benchmarks.sampler_throughput --models=qwen_0_5b \
    --dtype=float32 --repeats=2
stage judge_tiny ${JUDGE_TINY_S:-45} $PY -m benchmarks.judge_throughput --trajectories=16 --repeats=3
stage agent_loop ${AGENT_S:-45} $PY -m benchmarks.agent_loop_throughput --repeats=2
