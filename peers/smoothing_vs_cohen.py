#!/usr/bin/env python3
r"""advrob's randomized-smoothing certificates against Cohen, Rosenfeld and Kolter's reference
`Smooth.certify` (locuslab/smoothing, code/core.py), image by image.

For each model of an advrob run (`<run>/models/<name>/`, the study's MLP) this loads the weights
into a torch nn.Sequential, checks its clean accuracy, runs the reference CERTIFY with torch on the
CPU (its own noise, a fixed torch seed) with the settings advrob used (sigma, n0, n, alpha, batch
from `<run>/smoothing/<checkpoint dir>.json`), and compares with advrob's `radii_correct`:

- certified accuracy at each radius, both sides, on the same images;
- per image and radius: certified-correct on both, on neither, or on one only (a "flip");
- on the images both certify correctly: the radius differences, and the difference of the counts
  behind them (advrob's count nA is recovered exactly from its radius by inverting Cohen's own
  formula) as a z-score against binomial noise;
- a Monte-Carlo expectation: for each image, from the reference's 10-class counts (pooled with
  advrob's count where advrob certified), the probability q that an independent run certifies it
  correctly at radius r; the expected number of flips is sum 2 q (1 - q), to set beside the
  observed one.

The two sides draw different noise, so they differ by sampling alone; a difference far outside
the expectation (flips, z-scores) would point to a bug.

    VENV/bin/python peers/smoothing_vs_cohen.py --run RUN --mnist MNIST_DIR --out OUT.json \
        [--images 500] [--n 100000] [--n0 100] [--alpha 0.001] [--batch 1000] \
        [--models baseline,gaussian-noise-025,gaussian-noise-050] [--images-per-model name=N,...]
"""

import argparse
import datetime
import gzip
import hashlib
import json
import os
import platform
import sys
import time
from math import ceil

import numpy as np
import scipy
import statsmodels
import torch
import torch.nn as nn
from safetensors.torch import load_file
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint

RADII = [0.0, 0.5, 1.0, 1.5]
DEFAULT_MODELS = ["baseline", "gaussian-noise-025", "gaussian-noise-050"]
REFERENCE = {
    "repo": "locuslab/smoothing",
    "path": "code/core.py",
    "commit": "78a4d949e4f627d000a78908e001f8ca66c92943",
    "license": "the repository has no LICENSE file and its README names none: CERTIFY is written anew after the paper, nothing copied",
}


# ---------------------------------------------------------------------------------------------
# CERTIFY (Cohen, Rosenfeld and Kolter 2019, Algorithm 1 and §3.2), written here after the paper
# and the behaviour of their reference code (locuslab/smoothing, code/core.py, commit
# 78a4d949e4f627d000a78908e001f8ca66c92943): that repository carries no licence, so none of its
# code is copied. As the reference does: noise torch.randn(...) * sigma added to the image, n0
# selection copies then n estimation copies in batches, argmax over the classes' counts, the
# lower bound statsmodels' proportion_confint(nA, n, alpha=2*alpha, method="beta")[0], abstain
# when it is below 1/2, radius sigma * scipy's norm.ppf of it. Independent of advrob's code.
# ---------------------------------------------------------------------------------------------
class Smooth:
    """The smoothed classifier of `base` at noise `sigma`; `certify` returns (class, radius) or
    (ABSTAIN, 0.0)."""

    ABSTAIN = -1

    def __init__(self, base, num_classes, sigma):
        self.base = base
        self.num_classes = num_classes
        self.sigma = sigma
        self.last_counts = None  # the estimation counts of the last certify call

    def counts(self, x, copies, batch):
        """Class counts of the base classifier on `copies` noisy copies of the image `x`."""
        out = np.zeros(self.num_classes, dtype=np.int64)
        with torch.no_grad():
            left = copies
            while left > 0:
                b = min(batch, left)
                left -= b
                noisy = x.repeat((b, 1, 1, 1))
                noisy = noisy + torch.randn_like(noisy) * self.sigma
                pred = self.base(noisy).argmax(1).cpu().numpy()
                out += np.bincount(pred, minlength=self.num_classes)
        return out

    def certify(self, x, n0, n, alpha, batch):
        self.base.eval()
        chosen = int(self.counts(x, n0, batch).argmax())
        estimate = self.counts(x, n, batch)
        self.last_counts = estimate
        p_lower = proportion_confint(int(estimate[chosen]), n, alpha=2 * alpha, method="beta")[0]
        if p_lower < 0.5:
            return Smooth.ABSTAIN, 0.0
        return chosen, self.sigma * norm.ppf(p_lower)


# ---------------------------------------------------------------------------------------------


def cp_lower(k, n, alpha):
    """The reference's lower confidence bound (Smooth._lower_confidence_bound)."""
    return proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]


def cohen_radius(k, n, alpha, sigma):
    """The reference's radius for a count k of n (None when it abstains)."""
    p = cp_lower(k, n, alpha)
    return None if p < 0.5 else sigma * norm.ppf(p)


def count_from_radius(radius, n, alpha, sigma):
    """The count k whose reference radius is nearest `radius` (radii increase with k)."""
    lo, hi = 0, n  # largest k with cohen radius <= radius, by bisection on the bound itself
    target = norm.cdf(radius / sigma)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cp_lower(mid, n, alpha) <= target:
            lo = mid
        else:
            hi = mid - 1
    best = None
    for k in (lo - 1, lo, lo + 1):
        if 0 <= k <= n:
            r = cohen_radius(k, n, alpha, sigma)
            if r is not None and (best is None or abs(r - radius) < best[1]):
                best = (k, abs(r - radius))
    return best  # (k, |radius - reference radius of k|)


def min_count_certified(n, alpha, sigma, r):
    """The smallest count k the reference certifies at radius >= r (None: no count does)."""
    t = max(0.5, norm.cdf(r / sigma))

    def ok(k):
        p = cp_lower(k, n, alpha)
        return p >= 0.5 and sigma * norm.ppf(p) >= r

    if not ok(n):
        return None
    lo, hi = int(n * t) - 1, n
    lo = max(lo, 0)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(dirpath, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(dirpath, name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"{stem}(.gz) not in {dirpath}")


def load_mnist_test(dirpath):
    x = read_idx(find(dirpath, "t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    y = read_idx(find(dirpath, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)  # [N, 1, 28, 28], [N]


def load_model(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "model.json")))
    dep_path = os.path.join(model_dir, "deploy.json")
    dep = json.load(open(dep_path)) if os.path.exists(dep_path) else {}
    if cfg.get("arch", "mlp") != "mlp" or cfg["hidden"] != [128] or cfg["input"] != 784:
        raise SystemExit(f"{model_dir}: not the study's MLP: {cfg}")
    if dep.get("quantize") is not None or dep.get("normalize") is not None or dep.get("logit_scale", 1.0) != 1.0:
        raise SystemExit(f"{model_dir}: a deployment this script does not implement: {dep}")
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    # advrob (burn) stores Linear weights as [in, out]; torch's Linear.weight is [out, in]
    assert tuple(w["layers.0.weight"].shape) == (784, 128), w["layers.0.weight"].shape
    assert tuple(w["layers.1.weight"].shape) == (128, cfg["classes"]), w["layers.1.weight"].shape
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Dropout(cfg["dropout"]),
        nn.Linear(128, cfg["classes"]),
    )
    with torch.no_grad():
        net[1].weight.copy_(w["layers.0.weight"].t())
        net[1].bias.copy_(w["layers.0.bias"])
        net[4].weight.copy_(w["layers.1.weight"].t())
        net[4].bias.copy_(w["layers.1.bias"])
    net.eval()
    sha = hashlib.sha256(open(os.path.join(model_dir, "model.safetensors"), "rb").read()).hexdigest()
    return net, cfg, dep, sha


def model_dir_for(run, name):
    cands = sorted(
        d for d in os.listdir(os.path.join(run, "models"))
        if d.startswith(name + "-") and os.path.isdir(os.path.join(run, "models", d))
        and len(d[len(name) + 1:].split("-")) == 3  # <backend>-s<seed>-<key>: not a longer name
    )
    cands = [d for d in cands if os.path.exists(os.path.join(run, "smoothing", d + ".json"))]
    if len(cands) != 1:
        raise SystemExit(f"model {name}: {len(cands)} checkpoint dirs with a smoothing file: {cands}")
    return cands[0]


def selection_prob(probs, n0, label, rng, draws=4000):
    """P(the n0-sample argmax picks `label`), by simulation (ties go to the first class, as in
    numpy's argmax and advrob's)."""
    p = np.asarray(probs, dtype=float)
    p = p / p.sum()
    if p[label] > 0.7 and n0 >= 100:
        return 1.0
    m = rng.multinomial(n0, p, size=draws)
    return float(np.mean(m.argmax(1) == label))


def compare_model(args, name, x_all, y_all, log):
    d = model_dir_for(args.run, name)
    adv = json.load(open(os.path.join(args.run, "smoothing", d + ".json")))
    st = adv["settings"]
    sigma = float(st["sigma"])
    n, n0, alpha, batch = args.n, args.n0, args.alpha, args.batch
    for k, v in (("n", n), ("n0", n0), ("alpha", alpha), ("batch", batch)):
        if st[k] != v:
            log(f"  NOTE: {name}: advrob used {k} = {st[k]}, the reference runs with {v}")
    net, cfg, dep, sha = load_model(os.path.join(args.run, "models", d))
    if sha != adv.get("checkpoint_sha256"):
        log(f"  NOTE: weights SHA-256 {sha[:16]} differs from the smoothing file's {adv.get('checkpoint_sha256', '')[:16]}")
    with torch.no_grad():
        pred = torch.cat([net(x_all[i:i + 2000]).argmax(1) for i in range(0, len(x_all), 2000)])
    correct = (pred == y_all)
    clean_full = float(correct.float().mean())
    clean_500 = float(correct[:500].float().mean())
    log(f"  {name} ({d}): sigma {sigma}, clean accuracy {100 * clean_full:.2f}% on 10k, {100 * clean_500:.1f}% on the first 500")

    n_img = args.per_model.get(name, args.images)
    n_img = min(n_img, adv["test_examples"], len(x_all))
    radii_adv = np.asarray(adv["radii_correct"][:n_img], dtype=float)

    torch.manual_seed(args.seed)
    smoother = Smooth(net, cfg["classes"], sigma)
    rows = []
    t0 = time.time()
    for i in range(n_img):
        t1 = time.time()
        c, r = smoother.certify(x_all[i], n0, n, alpha, batch)
        counts = smoother.last_counts
        label = int(y_all[i])
        rows.append({
            "index": i, "label": label, "prediction": int(c), "radius": float(r),
            "counts": counts.tolist(), "seconds": round(time.time() - t1, 3),
        })
        if (i + 1) % 50 == 0 or i + 1 == n_img:
            log(f"    {i + 1}/{n_img} images, {time.time() - t0:.0f} s")
    wall = time.time() - t0

    labels = np.array([r["label"] for r in rows])
    radii_ref = np.array([r["radius"] if r["prediction"] == r["label"] else -1.0 for r in rows])
    abst_ref = sum(r["prediction"] == Smooth.ABSTAIN for r in rows)

    # advrob's counts, recovered from its radii through the reference's own formula
    k_adv = [None] * n_img
    max_recover_err = 0.0
    for i in range(n_img):
        if radii_adv[i] >= 0:
            k, err = count_from_radius(radii_adv[i], n, alpha, sigma)
            k_adv[i] = k
            max_recover_err = max(max_recover_err, err)

    # per image, the probability of the true label under noise (reference counts, pooled with
    # advrob's count where advrob certified the true label) and of a fresh run certifying it
    rng = np.random.default_rng(12345)
    p_label, p_sel = [], []
    for i, r in enumerate(rows):
        cnt = np.asarray(r["counts"], dtype=float)
        kl, tot = cnt[r["label"]], float(n)
        if k_adv[i] is not None:
            kl, tot = kl + k_adv[i], tot + n
        p = kl / tot
        p_label.append(p)
        probs = cnt / cnt.sum()
        rest = 1.0 - probs[r["label"]]
        probs = probs * ((1.0 - p) / rest) if rest > 0 else probs  # the other classes, rescaled
        probs[r["label"]] = p
        p_sel.append(selection_prob(probs, n0, r["label"], rng))
    p_label, p_sel = np.array(p_label), np.array(p_sel)

    per_radius = []
    for rad in RADII:
        a = radii_adv >= rad
        b = radii_ref >= rad
        kmin = min_count_certified(n, alpha, sigma, rad)
        if kmin is None:
            q = np.zeros(n_img)
        else:
            q = p_sel * binom.sf(kmin - 1, n, p_label)
        exp_flips = float(np.sum(2 * q * (1 - q)))
        flips_idx = np.nonzero(a != b)[0]
        flip_detail = []
        for i in flips_idx:
            flip_detail.append({
                "index": int(i), "advrob_radius": float(radii_adv[i]), "reference_radius": float(radii_ref[i]),
                "reference_prediction": rows[i]["prediction"], "label": int(labels[i]),
                "p_label": round(float(p_label[i]), 6), "q_certified": round(float(q[i]), 4),
                "k_min": kmin, "k_advrob": k_adv[i], "k_reference_label": rows[i]["counts"][rows[i]["label"]],
            })
        per_radius.append({
            "radius": rad,
            "advrob": float(a.mean()), "reference": float(b.mean()),
            "difference": float(a.mean() - b.mean()),
            "both": int(np.sum(a & b)), "neither": int(np.sum(~a & ~b)),
            "advrob_only": int(np.sum(a & ~b)), "reference_only": int(np.sum(~a & b)),
            "flips": int(len(flips_idx)),
            "expected_flips": round(exp_flips, 2),
            "expected_difference_sd": round(float(np.sqrt(np.sum(2 * q * (1 - q)))) / n_img, 5),
            "min_count_certified": kmin,
            "flip_detail": flip_detail,
        })

    both = (radii_adv >= 0) & (radii_ref >= 0)
    diff = radii_adv[both] - radii_ref[both]
    z = []
    for i in np.nonzero(both)[0]:
        ka, kr = k_adv[i], rows[i]["counts"][rows[i]["label"]]
        pa, pr = ka / n, kr / n
        var = n * (pa * (1 - pa) + pr * (1 - pr))
        if var > 0:
            z.append((ka - kr) / np.sqrt(var))
        # else both saw all n copies in the class: the same (largest) radius, no z
    z = np.array(z)
    both_all_n = int(both.sum()) - len(z)
    same_k = int(sum(1 for i in np.nonzero(both)[0] if k_adv[i] == rows[i]["counts"][rows[i]["label"]]))
    outcome_agree = int(np.sum((radii_adv >= 0) == (radii_ref >= 0)))
    res = {
        "model": name, "checkpoint_dir": d, "weights_sha256": sha, "sigma": sigma,
        "settings": {"n0": n0, "n": n, "alpha": alpha, "batch": batch, "torch_seed": args.seed},
        "advrob_settings": st,
        "images": n_img,
        "clean_accuracy_10k": clean_full, "clean_accuracy_first500": clean_500,
        "reference_wall_s": round(wall, 1),
        "abstained": {"reference": int(abst_ref),
                      "advrob_not_correct": int(np.sum(radii_adv < 0))},
        "outcome_agreement": {"agree": outcome_agree, "of": n_img,
                              "note": "certified-correct (radius >= 0) vs not, at radius 0"},
        "per_radius": per_radius,
        "radius_difference_both_certified": {
            "images": int(both.sum()),
            "mean": float(diff.mean()) if len(diff) else None,
            "mean_abs": float(np.abs(diff).mean()) if len(diff) else None,
            "max_abs": float(np.abs(diff).max()) if len(diff) else None,
            "same_count": same_k,
        },
        "count_z": {
            "images": int(len(z)),
            "mean": float(z.mean()) if len(z) else None,
            "sd": float(z.std()) if len(z) else None,
            "max_abs": float(np.abs(z).max()) if len(z) else None,
            "n_abs_gt_2": int(np.sum(np.abs(z) > 2)),
            "n_abs_gt_3": int(np.sum(np.abs(z) > 3)),
            "both_counts_n": both_all_n,
            "note": "(k_advrob - k_reference) / sqrt(n(pa(1-pa) + pr(1-pr))) on images both certify correctly, except those where both counts are n (no variance; listed in both_counts_n); N(0,1) under sampling noise alone",
        },
        "advrob_count_recovery_max_radius_error": max_recover_err,
        "reference_per_image": [{k: r[k] for k in ("index", "label", "prediction", "radius", "counts")} for r in rows],
        "advrob_radii_correct": radii_adv.tolist(),
        "advrob_count_recovered": k_adv,
    }
    log(f"    done in {wall:.0f} s; outcome agreement {outcome_agree}/{n_img}")
    for pr_ in per_radius:
        log(f"    r={pr_['radius']}: advrob {100 * pr_['advrob']:.1f}%  reference {100 * pr_['reference']:.1f}%  "
            f"flips {pr_['flips']} (expected {pr_['expected_flips']})")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="an advrob run directory (models/, smoothing/)")
    ap.add_argument("--mnist", required=True, help="directory with t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)")
    ap.add_argument("--images", type=int, default=500, help="the first N test images (per model)")
    ap.add_argument("--images-per-model", default="", help="name=N,... overriding --images for some models")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="model names (sigma from each advrob smoothing file)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed, set before each model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    args.per_model = {}
    for item in filter(None, args.images_per_model.split(",")):
        k, v = item.split("=")
        args.per_model[k] = int(v)
    torch.set_num_threads(args.threads)

    def log(msg):
        print(msg, flush=True)

    x_all, y_all = load_mnist_test(args.mnist)
    start = time.time()
    results = []
    for name in filter(None, args.models.split(",")):
        results.append(compare_model(args, name, x_all, y_all, log))
    out = {
        "meta": {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reference": REFERENCE,
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                         "scipy": scipy.__version__, "statsmodels": statsmodels.__version__},
            "threads": args.threads, "cpu": platform.processor() or platform.machine(),
            "wall_s": round(time.time() - start, 1),
            "radii": RADII,
        },
        "models": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    log(f"wrote {args.out} ({out['meta']['wall_s']} s)")


if __name__ == "__main__":
    main()
