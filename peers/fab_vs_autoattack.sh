#!/bin/sh
# advrob's FAB-T beside the original AutoAttack's (fra31/auto-attack, autoattack/fab_pt.py,
# FABAttack_PT as AutoAttack 'standard' runs it, device='cpu') on the same exported weights, the
# same first N MNIST test images, eps 0.1, 0.2, 0.3. Prints each side's robust accuracy and wall
# time and the images on which the two disagree.
#
# usage: peers/fab_vs_autoattack.sh MODEL_DIR N AUTOATTACK_SRC MNIST_DIR OUT [PYTHON] [BENCH_RUNNER]
#   (the arguments of ensemble_vs_autoattack.sh)
set -eu
model=$1; n=$2; aa=$3; mnist=$4; out=$5; py=${6:-python3}; br=${7:-bench-runner}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
# the weights in PyTorch's layout and the arguments that evaluate the same deployed model (paths
# without spaces: the arguments are split by the shell)
eval_args=$(PYTHONPATH="$here" "$py" "$here/export_weights.py" "$model" "$out")
rm -rf "$out/advrob"
# shellcheck disable=SC2086
/usr/bin/time -f "advrob: wall %e s, %P CPU" "$br" evaluate $eval_args --config "$here/fab-t.toml" \
    --test-limit "$n" --mirror "$mnist" --data-dir "$out/data" --backends ndarray \
    --out "$out/advrob" --reports "$out/advrob/report" > "$out/advrob.log" 2>&1
tail -1 "$out/advrob.log"
/usr/bin/time -f "autoattack: wall %e s, %P CPU" "$py" "$here/attack_compare.py" --model-dir "$model" \
    --n "$n" --eps 0.1,0.2,0.3 --attacks aa-fab-t --autoattack-src "$aa" --threads 2 --mnist "$mnist" \
    --out "$out/autoattack.json" > "$out/autoattack.log" 2>&1
tail -1 "$out/autoattack.log"
"$py" - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
aa = {r["eps"]: r["robust"] for r in json.load(open(f"{out}/autoattack.json"))["models"][0]["results"]}
recs = [json.loads(l) for f in glob.glob(f"{out}/advrob/records/*") for l in open(f)]
rows = []
for r in sorted((x for x in recs if str(x.get("attack", "")).startswith("fab")), key=lambda x: x["eps"]):
    hexs, n = r["adversarial_correct_examples"].split(":")
    n = int(n)
    bits = bin(int(hexs, 16))[2:].zfill(len(hexs) * 4)[:n]
    ref = aa[r["eps"]]
    dis = [i for i in range(n) if bits[i] != ref[i]]
    row = {"eps": r["eps"], "n": n, "advrob_robust": bits.count("1"), "autoattack_robust": ref[:n].count("1"),
           "disagree": len(dis), "advrob_robust_autoattack_broken": [i for i in dis if bits[i] == "1"],
           "autoattack_robust_advrob_broken": [i for i in dis if ref[i] == "1"],
           "advrob_attack_s": round(r["seconds"], 1)}
    rows.append(row)
    print(json.dumps(row))
json.dump(rows, open(f"{out}/comparison.json", "w"), indent=1)
PY
