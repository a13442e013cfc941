#!/usr/bin/env bash
# Issue 13 on one GPU (H100/H200): training through the real job path, the DPO reference precompute, the memory
# plan against measured peaks, memory after a cancel, and evaluation speed — one script, one device call.
#
# From a session with a device (15 minutes of device time in all; the machine's start counts), in the repo root:
#     run(command="bash scripts/device_gpu_bench.sh", carry=[".whl"], timeout_s=600)
# .whl holds the wheels the device lacks (it has python3 3.12, torch 2.11 CUDA 13, transformers 5.17, accelerate
# 1.15, peft, safetensors, pyarrow, pandas, pyyaml, psutil; no network). Download them on a machine with the index:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       trl==1.16.0 transformers==5.24.0 datasets==4.8.4 dill==0.4.0 multiprocess==0.70.18 xxhash==4.1.0 \
#       fsspec==2026.2.0 huggingface_hub==1.33.0 requests==2.34.2 urllib3==2.8.0 idna==3.20 \
#       charset_normalizer==3.5.3 certifi==2026.10.19.post1 sqlmodel==0.0.50 SQLAlchemy==2.1.9 pydantic==2.14.4 \
#       pydantic_core==2.50.5 typing_extensions==4.16.0 typing_inspection==0.4.5 annotated_types==0.8.0 \
#       peft==0.21.2 liger-kernel==0.8.5 alembic==1.20.1 Mako==1.4.3                      # 24 wheels, 26 MB
# (datasets 4.8.4, not 5.x: 5.x wants pyarrow >= 24 and huggingface_hub 2.x, which needs httpx2, absent there;
# huggingface_hub 1.33 because transformers 5.24 checks >= 1.31 at import.)
#
# What comes back under $OUT: versions.txt, table.txt + results.json + logs/ (bench/gpu_train_mfu.py), bench.log,
# eval.log. Exit status: the bench's (1: a memory estimate off by > 15 %, a failed row, or memory held after a cancel).
# On a CPU, to check the script itself (tiny shapes, no install): PY=.venv/bin/python TINY=1 OUT=/tmp/o bash THIS
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-400}  # seconds for the training bench; the rest of a 600 s call: install, eval, slack
PY=${PY:-python3}
TINY=${TINY:+--tiny}

# --- install the carried wheels beside the device's own packages (they win: PYTHONPATH comes first)
if [ -n "$TINY" ]; then
    echo "TINY: the wheels are for the device's Python 3.12; using $PY's own packages"
elif python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING
else  # no pip: a wheel is a zip of the files --target would write
    for w in .whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done
fi
[ -z "$TINY" ] && export PYTHONPATH=/tmp/site
export TOKENIZERS_PARALLELISM=false
{
    $PY - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA")
for m in ("transformers", "trl", "accelerate", "datasets", "peft", "liger_kernel", "triton", "sqlmodel", "pydantic",
          "huggingface_hub", "tokenizers"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "installed"))
    except Exception as e:
        print(m, "NOT IMPORTABLE:", type(e).__name__, e)
from backend import perf
from backend.specs import CptSpec, DataSource
r = perf.resolve(CptSpec(model="m", data=[DataSource(source="builtin:facts-corpus")]), cuda=torch.cuda.is_available())
print("\n".join(r.lines()))
PY
    nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv || echo "no nvidia-smi"
} 2>&1 | tee "$OUT/versions.txt"

# --- training through the job path (tokens/s, MFU, peak vs plan, DPO precompute vs trl defaults, cancel)
rm -rf /tmp/gpubench
timeout $((BUDGET + 60)) $PY bench/gpu_train_mfu.py $TINY --budget-s "$BUDGET" --out "$OUT" --keep /tmp/gpubench \
    2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}

# --- evaluation on CUDA: the 1.1B-shaped model answering 500 questions (target <= 60 s). A random model never
# stops early, so every answer runs to max_new_tokens: the worst case.
if [ -d /tmp/gpubench/tinyllama ]; then
    timeout 90 $PY bench/bench_eval.py --model /tmp/gpubench/tinyllama --items 500 --batched-only \
        ${TINY:+--max-new-tokens 8} 2>&1 \
        | grep -v "Loading weights" | tail -5 | tee "$OUT/eval.log"
fi
exit "$rc"
