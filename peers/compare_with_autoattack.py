#!/usr/bin/env python3
"""advrob's records beside attack_compare.py's output for the original AutoAttack, image by image.

    python peers/compare_with_autoattack.py OUT ADVROB_PREFIX AA_ATTACK

OUT holds advrob*/records/*.jsonl (`bench-runner evaluate` runs, one per ε) and autoattack.json
(attack_compare.py). For each ε: robust images on each side, the images on which they disagree
(split into "robust for advrob, broken by AutoAttack" — the direction the goal forbids — and the
converse), and, for an ensemble, the robust count after each stage on both sides. Writes
OUT/comparison.json and prints one JSON line per ε.
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_runs import bits  # noqa: E402


def advrob_bits(mask):
    """An advrob record's `adversarial_correct_examples` ("hex:n") as a '0'/'1' string, as
    attack_compare.py writes its masks (decoded by compare_runs.bits)."""
    return "".join("1" if b else "0" for b in bits(mask))


def advrob_stages(rec):
    """Robust count after each component of an advrob ensemble record (clean-correct minus the
    images broken so far), or [] for a single attack."""
    left, out = rec["clean_correct"], []
    for c in rec.get("components") or []:
        left -= c["broken"]
        out.append({"attack": c["attack"], "robust": left})
    return out


def main():
    out, prefix, aa_attack = sys.argv[1], sys.argv[2], sys.argv[3]
    doc = json.load(open(os.path.join(out, "autoattack.json")))
    aa = {r["eps"]: r for r in doc["models"][0]["results"] if r["attack"] == aa_attack}
    recs = [json.loads(line) for f in glob.glob(os.path.join(out, "advrob*", "records", "*")) for line in open(f)]
    rows = []
    for r in sorted((x for x in recs if str(x.get("attack", "")).startswith(prefix)), key=lambda x: x["eps"]):
        bits = advrob_bits(r["adversarial_correct_examples"])
        n = len(bits)
        ref = aa[r["eps"]]["robust"][:n]
        dis = [i for i in range(n) if bits[i] != ref[i]]
        row = {"eps": r["eps"], "n": n, "advrob_robust": bits.count("1"), "autoattack_robust": ref.count("1"),
               "agree": n - len(dis), "disagree": len(dis),
               "advrob_robust_autoattack_broken": [i for i in dis if bits[i] == "1"],
               "autoattack_robust_advrob_broken": [i for i in dis if ref[i] == "1"],
               "advrob_attack_s": round(r["seconds"], 1), "autoattack_s": aa[r["eps"]].get("wall_s")}
        stages = advrob_stages(r)
        if stages:
            row["advrob_stages"] = stages
            row["autoattack_stages"] = [{"attack": s["attack"], "robust": round(s["robust_acc"] * n)}
                                        for s in aa[r["eps"]].get("stages", [])]
        rows.append(row)
        print(json.dumps(row))
    if not rows:
        sys.exit(f"no advrob record whose attack starts with {prefix!r} under {out}/advrob*/records")
    json.dump(rows, open(os.path.join(out, "comparison.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
