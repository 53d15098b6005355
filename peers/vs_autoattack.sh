#!/bin/sh
# advrob beside the original AutoAttack (fra31/auto-attack, device='cpu') on the same exported
# weights, the same first N MNIST test images, eps 0.1, 0.2, 0.3, image by image:
#   standard  advrob's AutoAttack-standard ensemble (autoattack-standard.toml, the reproduce's) and
#             AutoAttack(version='standard').run_standard_evaluation, with the robust count after
#             each stage on both sides
#   fab-t     advrob's FAB-T alone (fab-t.toml) and fra31's FABAttack_PT as 'standard' runs 'fab-t'
# Prints each side's robust count and wall time and the images on which the two disagree; writes
# OUT/comparison.json (compare_with_autoattack.py).
#
# usage: peers/vs_autoattack.sh standard|fab-t MODEL_DIR N AUTOATTACK_SRC MNIST_DIR OUT [PYTHON] [BENCH_RUNNER]
#   MODEL_DIR       an advrob checkpoint directory (model.json, model.safetensors; arch mlp or lenet)
#   AUTOATTACK_SRC  a checkout of github.com/fra31/auto-attack (not on PyPI)
#   MNIST_DIR       the four MNIST .gz files (advrob verifies them against the canonical SHA-256)
#   PYTHON          a Python with torch and safetensors (default: python3)
#   BENCH_RUNNER    advrob's binary (default: bench-runner on the PATH)
set -eu
which=$1; model=$2; n=$3; aa=$4; mnist=$5; out=$6; py=${7:-python3}; br=${8:-bench-runner}
case $which in
    standard) config=autoattack-standard.toml; prefix=ensemble; aa_attack=aa-standard ;;
    fab-t) config=fab-t.toml; prefix=fab; aa_attack=aa-fab-t ;;
    *) echo "vs_autoattack.sh: the first argument is 'standard' or 'fab-t', not '$which'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
# the weights in PyTorch's layout and the arguments that evaluate the same deployed model (paths
# without spaces: the arguments are split by the shell)
eval_args=$(PYTHONPATH="$here" "$py" "$here/export_weights.py" "$model" "$out")
# one advrob run per eps (a fresh cascade, as AutoAttack runs each eps)
for eps in 0.1 0.2 0.3; do
    rm -rf "$out/advrob-$eps"
    # shellcheck disable=SC2086
    /usr/bin/time -f "advrob eps $eps: wall %e s, %P CPU" "$br" evaluate $eval_args --config "$here/$config" \
        --eps "$eps" --test-limit "$n" --mirror "$mnist" --data-dir "$out/data" --backends ndarray \
        --out "$out/advrob-$eps" --reports "$out/advrob-$eps/report" > "$out/advrob-$eps.log" 2>&1
    tail -1 "$out/advrob-$eps.log"
done
# the reference's side, kept when OUT already holds it (REDO_AUTOATTACK=1 runs it again)
if [ -f "$out/autoattack.json" ] && [ "${REDO_AUTOATTACK:-0}" != 1 ]; then
    echo "autoattack: kept $out/autoattack.json"
else
    /usr/bin/time -f "autoattack: wall %e s, %P CPU" "$py" "$here/attack_compare.py" --model-dir "$model" \
        --n "$n" --eps 0.1,0.2,0.3 --attacks "$aa_attack" --autoattack-src "$aa" --threads 2 --mnist "$mnist" \
        --out "$out/autoattack.json" > "$out/autoattack.log" 2>&1
    tail -1 "$out/autoattack.log"
fi
"$py" "$here/compare_with_autoattack.py" "$out" "$prefix" "$aa_attack"
