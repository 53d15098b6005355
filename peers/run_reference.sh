#!/usr/bin/env bash
# Run attack_compare.py on advrob's reproduce checkpoints (baseline, pgd-adversarial-training,
# gm-quantize, gm-saturated-logits, distillation) and write peers/results/reference-<date>.json.
#   peers/run_reference.sh [N] [extra attack_compare.py args...]
# Env: PY (default ../venv/bin/python), MODELS (default runs/reproduce/models), MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-../venv/bin/python}
MODELS=${MODELS:-runs/reproduce/models}
MNIST=${MNIST:-../shared/data/mnist}
N=${1:-1000}; shift || true
args=()
for name in baseline pgd-adversarial-training gm-quantize gm-saturated-logits distillation; do
  dir=$(ls -1td "$MODELS"/"$name"-ndarray-s42-*/ 2>/dev/null | head -n 1 || true)  # newest
  if [[ -z "$dir" ]]; then echo "no checkpoint for $name under $MODELS" >&2; exit 1; fi
  args+=(--model-dir "${dir%/}")
done
out=peers/results/reference-$(date +%Y-%m-%d).json
"$PY" peers/attack_compare.py "${args[@]}" --mnist "$MNIST" --n "$N" --eps 0.1,0.2,0.3 --out "$out" "$@"
