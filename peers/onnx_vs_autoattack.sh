#!/bin/sh
# advrob's ensemble on a model it knows only as an ONNX file, beside the original AutoAttack
# (fra31/auto-attack, version='standard', device='cpu') on the same PyTorch model, the same first N
# MNIST test images, eps 0.3. The AutoAttack side is `robust_cnn_onnx.py autoattack`; this script
# runs advrob (`bench-runner evaluate --onnx`) and compares the two image by image.
#
# usage: peers/onnx_vs_autoattack.sh MODEL_ONNX AUTOATTACK_JSON N MNIST_DIR OUT [BENCH_RUNNER] [BACKEND]
#   MODEL_ONNX       the model exported by `robust_cnn_onnx.py train` (OUTDIR/model.onnx)
#   AUTOATTACK_JSON  what `robust_cnn_onnx.py autoattack` wrote for the same N and eps 0.3
#   MNIST_DIR        the four MNIST .gz files (advrob verifies them against the canonical SHA-256)
#   BENCH_RUNNER     advrob's binary (default: bench-runner on the PATH)
#   BACKEND          ndarray (default) or flex (a build with --features flex)
# Writes OUT/compare.json and prints it.
set -eu
onnx=$1; aa=$2; n=$3; mnist=$4; out=$5; br=${6:-bench-runner}; backend=${7:-ndarray}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
rm -rf "$out/advrob"
/usr/bin/time -f "advrob: wall %e s, %P CPU" "$br" evaluate --onnx "$onnx" --model-name robust-cnn \
    --config "$here/ensemble-eps0.3.toml" --test-limit "$n" --mirror "$mnist" \
    --data-dir "$out/data" --backends "$backend" --out "$out/advrob" \
    --reports "$out/advrob/report" > "$out/advrob.log" 2>&1
tail -1 "$out/advrob.log"
python3 - "$out" "$aa" "$n" "$backend" <<'PY'
import glob, json, sys
out, aa_path, n, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
aa = json.load(open(aa_path))
recs = [json.loads(l) for f in glob.glob(f"{out}/advrob/records/*") for l in open(f)]
r = [x for x in recs if str(x.get("attack", "")).startswith("ensemble")][-1]
hexs, m = r["adversarial_correct_examples"].split(":")
assert int(m) == n, (m, n)
bits = bin(int(hexs, 16))[2:].zfill(len(hexs) * 4)[:n]
ref = aa["robust"][:n]
adv_robust_aa_broken = [i for i in range(n) if bits[i] == "1" and ref[i] == "0"]
aa_robust_adv_broken = [i for i in range(n) if bits[i] == "0" and ref[i] == "1"]
res = {
    "n": n,
    "eps": 0.3,
    "backend": backend,
    "advrob_robust_accuracy": bits.count("1") / n,
    "autoattack_robust_accuracy": ref.count("1") / n,
    "difference_points": 100 * (bits.count("1") - ref.count("1")) / n,
    "advrob_clean_accuracy": r.get("clean_accuracy"),
    "autoattack_clean_accuracy": aa.get("clean_accuracy"),
    "autoattack_stages": aa.get("stages"),
    "agree": n - len(adv_robust_aa_broken) - len(aa_robust_adv_broken),
    "robust_for_advrob_broken_by_autoattack": adv_robust_aa_broken,
    "robust_for_autoattack_broken_by_advrob": aa_robust_adv_broken,
    "advrob_attack_seconds": r.get("seconds"),
    "autoattack_seconds": aa.get("seconds"),
    "advrob_attack": r.get("attack"),
}
json.dump(res, open(f"{out}/compare.json", "w"), indent=1)
print(json.dumps(res, indent=1))
PY
