#!/bin/sh
# advrob's AutoAttack-standard ensemble (autoattack-standard.toml at eps 0.1, the reproduce's) beside
# the original AutoAttack (fra31/auto-attack, version='standard', device='cpu', 2 threads) on the
# same exported weights, the same first N MNIST test images, the same cores, interleaved:
# advrob, AutoAttack, advrob, …, AutoAttack, advrob (ROUNDS AutoAttack runs, ROUNDS + 1 advrob
# runs). Each AutoAttack run (the total of its stages, from its own log) is set against the two
# advrob runs beside it (the ensemble record's seconds); every run's robust count and the images on
# which it disagrees with AutoAttack are printed, and everything goes to OUT/interleaved.json.
#
# usage: [ROUNDS=3] peers/ensemble_vs_autoattack.sh MODEL_DIR N AUTOATTACK_SRC MNIST_DIR OUT [PYTHON] [BENCH_RUNNER]
#   MODEL_DIR       an advrob checkpoint directory (model.json, model.safetensors; arch mlp or lenet)
#   AUTOATTACK_SRC  a checkout of github.com/fra31/auto-attack (not on PyPI)
#   MNIST_DIR       the four MNIST .gz files (advrob verifies them against the canonical SHA-256)
#   PYTHON          a Python with torch and safetensors (default: python3)
#   BENCH_RUNNER    advrob's binary (default: bench-runner on the PATH)
set -eu
model=$1; n=$2; aa=$3; mnist=$4; out=$5; py=${6:-python3}; br=${7:-bench-runner}
rounds=${ROUNDS:-3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
# the weights in PyTorch's layout and the arguments that evaluate the same deployed model (paths
# without spaces: the arguments are split by the shell)
eval_args=$(PYTHONPATH="$here" "$py" "$here/export_weights.py" "$model" "$out")
# timed NAME COMMAND...: COMMAND with its output in OUT/NAME.log, its wall time and CPU share in
# OUT/NAME.time, printed
timed() {
    name=$1; shift
    /usr/bin/time -f "%e %P" -o "$out/$name.time" "$@" > "$out/$name.log" 2>&1
    read -r wall cpu < "$out/$name.time"
    echo "$name: wall $wall s, $cpu CPU"
}
advrob() {
    rm -rf "$out/adv-$1"
    # shellcheck disable=SC2086
    timed "adv-$1" "$br" evaluate $eval_args --config "$here/autoattack-standard.toml" --eps 0.1 \
        --test-limit "$n" --mirror "$mnist" --data-dir "$out/data" --backends ndarray \
        --out "$out/adv-$1" --reports "$out/adv-$1/report"
}
autoattack() {
    timed "aa-$1" "$py" "$here/attack_compare.py" --model-dir "$model" --n "$n" --eps 0.1 \
        --attacks aa-standard --autoattack-src "$aa" --threads 2 --mnist "$mnist" \
        --out "$out/aa-$1.json"
}
advrob 1
r=1
while [ "$r" -le "$rounds" ]; do
    autoattack "$r"
    r=$((r + 1))
    advrob "$r"
done
PYTHONPATH="$here" "$py" - "$out" "$rounds" "$model" <<'PY'
import glob, hashlib, json, os, sys
from compare_with_autoattack import advrob_bits
out, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def wall(run):
    w, cpu = open(f"{out}/{run}.time").read().split()[-2:]
    return float(w), cpu
aa_runs, adv_runs = [], []
for r in range(1, rounds + 1):
    res = json.load(open(f"{out}/aa-{r}.json"))["models"][0]["results"][0]
    stages = res["stages"]
    w, cpu = wall(f"aa-{r}")
    aa_runs.append({"run": f"aa-{r}", "robust": res["robust"].count("1"),
                    "cumulative_stage_times_s": {s["attack"]: s["cumulative_s"] for s in stages},
                    "stages_total_s": stages[-1]["cumulative_s"], "wall_s": w, "cpu": cpu,
                    "mask": res["robust"]})
for r in range(1, rounds + 2):
    recs = [json.loads(l) for f in glob.glob(f"{out}/adv-{r}/records/*") for l in open(f)]
    rec = [x for x in recs if str(x.get("attack", "")).startswith("ensemble")][-1]
    bits = advrob_bits(rec["adversarial_correct_examples"])
    n = len(bits)
    w, cpu = wall(f"adv-{r}")
    adv_runs.append({"run": f"adv-{r}", "attack_s": round(rec["seconds"], 2), "wall_s": w, "cpu": cpu,
                     "robust": bits.count("1"), "n": n, "mask": bits})
for a in adv_runs:
    dis = [sum(a["mask"][i] != aa["mask"][i] for i in range(a["n"])) for aa in aa_runs]
    gain = [sum(a["mask"][i] == "1" and aa["mask"][i] == "0" for i in range(a["n"])) for aa in aa_runs]
    a["disagree_with_autoattack"] = max(dis)
    a["robust_for_advrob_broken_by_autoattack"] = max(gain)
ratios = []
for i, aa in enumerate(aa_runs):
    for a in (adv_runs[i], adv_runs[i + 1]):
        ratios.append(round(aa["stages_total_s"] / a["attack_s"], 2))
for x in aa_runs + adv_runs:
    del x["mask"]
weights = open(os.path.join(model, "model.safetensors"), "rb").read()
doc = {"model_dir": os.path.abspath(model), "weights_sha256": hashlib.sha256(weights).hexdigest(),
       "order": [r["run"] for pair in zip(adv_runs, aa_runs + [None]) for r in pair if r],
       "autoattack": aa_runs, "advrob": adv_runs,
       "ratios_autoattack_stages_over_advrob_attack_beside_it": ratios}
json.dump(doc, open(f"{out}/interleaved.json", "w"), indent=1)
for a in adv_runs:
    print(f"{a['run']}: robust {a['robust']}/{a['n']}, attack {a['attack_s']} s, disagrees with "
          f"AutoAttack on {a['disagree_with_autoattack']} (robust here, broken there: "
          f"{a['robust_for_advrob_broken_by_autoattack']})")
for a in aa_runs:
    print(f"{a['run']}: robust {a['robust']}, stages {a['stages_total_s']} s")
print(f"AutoAttack / advrob, each AutoAttack run against the advrob runs beside it: "
      f"{min(ratios)}-{max(ratios)}x ({', '.join(map(str, ratios))}); {out}/interleaved.json")
PY
