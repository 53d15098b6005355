#!/bin/sh
# advrob's ensemble beside the original AutoAttack (fra31/auto-attack, version='standard',
# device='cpu') on the same exported weights, the same first N MNIST test images, eps 0.1, the
# same cores, run in turn: advrob, AutoAttack, advrob. Prints each side's wall time and robust
# accuracy and the images on which the two disagree.
#
# usage: peers/ensemble_vs_autoattack.sh MODEL_DIR N AUTOATTACK_SRC MNIST_DIR OUT [PYTHON] [BENCH_RUNNER]
#   MODEL_DIR       an advrob checkpoint directory (model.json, model.safetensors; arch mlp or lenet)
#   AUTOATTACK_SRC  a checkout of github.com/fra31/auto-attack (not on PyPI)
#   MNIST_DIR       the four MNIST .gz files (advrob verifies them against the canonical SHA-256)
#   PYTHON          a Python with torch and safetensors (default: python3)
#   BENCH_RUNNER    advrob's binary (default: bench-runner on the PATH)
set -eu
model=$1; n=$2; aa=$3; mnist=$4; out=$5; py=${6:-python3}; br=${7:-bench-runner}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
# the weights in PyTorch's layout and the arguments that evaluate the same deployed model (paths
# without spaces: the arguments are split by the shell)
eval_args=$(PYTHONPATH="$here" "$py" "$here/export_weights.py" "$model" "$out")
advrob() {
    tag=$1
    rm -rf "$out/advrob-$tag"
    # shellcheck disable=SC2086
    /usr/bin/time -f "advrob $tag: wall %e s, %P CPU" "$br" evaluate $eval_args \
        --config "$here/ensemble-eps0.1.toml" --test-limit "$n" --mirror "$mnist" \
        --data-dir "$out/data" --backends ndarray --out "$out/advrob-$tag" \
        --reports "$out/advrob-$tag/report" > "$out/advrob-$tag.log" 2>&1
    tail -1 "$out/advrob-$tag.log"
}
advrob 1
/usr/bin/time -f "autoattack: wall %e s, %P CPU" "$py" "$here/attack_compare.py" --model-dir "$model" \
    --n "$n" --eps 0.1 --attacks aa-standard --autoattack-src "$aa" --threads 2 --mnist "$mnist" \
    --out "$out/autoattack.json" > "$out/autoattack.log" 2>&1
grep -E "robust accuracy after|autoattack: wall" "$out/autoattack.log"
advrob 2
"$py" - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
aa = json.load(open(f"{out}/autoattack.json"))["models"][0]["results"][0]["robust"]
for run in ("advrob-1", "advrob-2"):
    recs = [json.loads(l) for f in glob.glob(f"{out}/{run}/records/*") for l in open(f)]
    r = [x for x in recs if str(x.get("attack", "")).startswith("ensemble")][-1]
    hexs, n = r["adversarial_correct_examples"].split(":")
    n = int(n)
    bits = bin(int(hexs, 16))[2:].zfill(len(hexs) * 4)[:n]
    dis = [i for i in range(n) if bits[i] != aa[i]]
    print(f"{run}: robust {bits.count('1')}/{n} (AutoAttack {aa[:n].count('1')}), "
          f"disagree on {len(dis)}, robust for advrob but broken by AutoAttack: "
          f"{sum(bits[i] == '1' for i in dis)}; attack time {r['seconds']:.1f} s")
PY
