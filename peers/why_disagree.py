#!/usr/bin/env python3
"""The images advrob counts robust and the original AutoAttack breaks, one by one: the luck of the
random draws, or an image advrob's attack misses?

    python peers/why_disagree.py OUT_ROOT AUTOATTACK_SRC MNIST_DIR BENCH_RUNNER [SEEDS]

For every OUT_ROOT/*/comparison.json (`vs_autoattack.sh standard` wrote it) and each image in its
`advrob_robust_autoattack_broken`: the original AutoAttack (version='standard', device='cpu') with
seeds 0..SEEDS-1 on that image alone — how many seeds break it, and at which stage — and advrob's
AutoAttack-standard ensemble with SEEDS seeds on that image alone (`bench-runner evaluate
--dataset-dir` on a one-image test set written here, `--seeds 1..SEEDS`). An image both sides break
with some seeds and not others is a draw of the random starts (APGD's start, Square's windows),
not a weaker attack. Writes OUT_ROOT/disagreements.json and prints one line per image.
"""

import glob
import gzip
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import advrob_layout  # noqa: E402
import attack_compare  # noqa: E402


def write_idx(directory, image, label):
    """A one-image MNIST in IDX form (train and test the same image): advrob's --dataset-dir."""
    os.makedirs(directory, exist_ok=True)
    pixels = np.rint(image.numpy().reshape(28, 28) * 255).astype(np.uint8)
    img = np.array([0, 0, 8, 3], np.uint8).tobytes() + np.array([1, 28, 28], ">u4").tobytes() + pixels.tobytes()
    lab = np.array([0, 0, 8, 1], np.uint8).tobytes() + np.array([1], ">u4").tobytes() + bytes([int(label)])
    for split in ("train", "t10k"):
        with gzip.open(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(img)
        with gzip.open(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(lab)


def advrob_seeds(bench_runner, eval_args, work, eps, seeds):
    """Robust (1) or broken (0) under advrob's ensemble, per seed, on the one-image set in work/data."""
    out = os.path.join(work, f"advrob-{eps}")
    subprocess.run(["rm", "-rf", out], check=True)
    cmd = [bench_runner, "evaluate", *shlex.split(eval_args), "--config",
           os.path.join(here, "autoattack-standard.toml"), "--eps", str(eps), "--dataset-dir",
           os.path.join(work, "data"), "--backends", "ndarray", "--seeds",
           ",".join(str(s) for s in range(1, seeds + 1)), "--out", out, "--reports", os.path.join(out, "report")]
    subprocess.run(cmd, check=True, capture_output=True)
    recs = [json.loads(line) for f in glob.glob(os.path.join(out, "records", "*")) for line in open(f)]
    return {r["seed"]: r["adversarial_correct"] for r in recs if r["attack"].startswith("ensemble")}


def main():
    root, aa_src, mnist, bench_runner = sys.argv[1:5]
    seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    attack_compare.load_autoattack(aa_src)
    torch.set_num_threads(2)
    x_all, y_all = advrob_layout.load_mnist(mnist, "test")
    rows = []
    for comparison in sorted(glob.glob(os.path.join(root, "*", "comparison.json"))):
        out = os.path.dirname(comparison)
        model_dir = json.load(open(os.path.join(out, "autoattack.json")))["models"][0]["dir"]
        model, _ = advrob_layout.load(model_dir)
        eval_args = subprocess.run([sys.executable, os.path.join(here, "export_weights.py"), model_dir, out],
                                   check=True, capture_output=True, text=True).stdout.strip()
        for row in json.load(open(comparison)):
            for i in row["advrob_robust_autoattack_broken"]:
                x, y = x_all[i:i + 1], y_all[i:i + 1]
                aa = []
                for s in range(seeds):
                    adv, _, stages = attack_compare.run_aa_standard(model, x, y, row["eps"], 1, seed=s)
                    broken = bool(attack_compare.predict(model, adv)[0] != y[0])
                    stage = next((st["attack"] for st in stages if st["robust_acc"] == 0.0), None)
                    aa.append({"seed": s, "broken": broken, "stage": stage if broken else None})
                work = os.path.join(out, f"why-{i}")
                write_idx(os.path.join(work, "data"), x[0], y[0])
                ours = advrob_seeds(bench_runner, eval_args, work, row["eps"], seeds)
                r = {"model": os.path.basename(out), "eps": row["eps"], "image": i,
                     "autoattack_broken_seeds": sum(a["broken"] for a in aa), "autoattack": aa,
                     "advrob_broken_seeds": sum(1 for v in ours.values() if v == 0), "advrob": ours,
                     "seeds": seeds}
                rows.append(r)
                print(json.dumps({k: v for k, v in r.items() if k not in ("autoattack", "advrob")}), flush=True)
    json.dump(rows, open(os.path.join(root, "disagreements.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
