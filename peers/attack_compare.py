#!/usr/bin/env python3
"""An independent attack reference on advrob's weights.

Loads advrob MLP checkpoints (model.json + model.safetensors [+ deploy.json]) into PyTorch and
attacks them with published implementations (torchattacks; foolbox's FMN when installed), so that
the strength of advrob's own attacks can be compared example by example.

    python peers/attack_compare.py --model-dir runs/reproduce/models/baseline-ndarray-s42-XXXX \\
        [--model-dir ...] [--mnist ../shared/data/mnist] [--n 1000] [--eps 0.1,0.2,0.3] \\
        [--attacks apgd-ce,apgd-t,fab-t,square,autoattack-standard,pgd20,fmn] --out results.json

Robust accuracy at (model, attack, eps) is the share of the N examples (the first N of the MNIST
test set) that are classified correctly clean AND after the attack, by the deployed model. Every
adversarial example is checked against the budget (L-inf <= eps) and the box [0, 1]; the largest
violation is reported, and `robust_acc_valid` is the robust accuracy when an example outside the
budget or the box does not count as a success of the attack.

Attacks (all untargeted L-inf, seed 0):
  apgd-ce              torchattacks.APGD(steps=100, loss='ce', n_restarts=1)
  apgd-t               torchattacks.APGDT(steps=100, n_classes=10, n_restarts=1)  (DLR-targeted, 9 targets)
  fab-t                torchattacks.FAB(steps=100, multi_targeted=True, n_classes=10, n_restarts=1)
  square               torchattacks.Square(n_queries=5000, n_restarts=1)  (margin loss, gradient-free)
  autoattack-standard  torchattacks.AutoAttack(version='standard', norm='Linf', n_classes=10, seed=0)
                       NOTE: torchattacks builds its APGD/APGD-T/FAB with their default steps=10, not
                       the 100 iterations of the original AutoAttack; see aa-components below.
  pgd20                torchattacks.PGD(eps, alpha=2.5*eps/20, steps=20, random_start=True)
  apgd-ce-bpda, pgd20-bpda
                       the same attacks computed on the straight-through (BPDA) version of a model
                       with input quantisation, judged on the faithful model; only run for models
                       whose deploy.json quantizes (otherwise they equal apgd-ce / pgd20).
  fgsm                 torchattacks.FGSM(eps) (not in the default list; an anchor: on advrob checkpoints it
                       agreed with advrob's own FGSM on every example checked)
  fmn                  foolbox LInfFMNAttack(steps=100), minimum-norm: per-example smallest L-inf
                       epsilon found, and the robust accuracy it implies at each eps.
  aa-square            the ORIGINAL AutoAttack Square (fra31/auto-attack, autoattack/square.py,
                       SquareAttack), constructed as AutoAttack 'standard' does: norm='Linf',
                       n_queries=5000, p_init=0.8, n_restarts=1, seed=0, loss='margin',
                       resc_schedule=False (torchattacks' Square rescales the schedule), device='cpu',
                       verbose=False; perturb(x, y) on the clean-correct examples, in chunks of
                       --batch. Needs --autoattack-src (a checkout of fra31/auto-attack, put on
                       sys.path); given that option without --attacks, aa-square is added to the
                       default list. Not an aa-components member.
  aa-fab-t             the ORIGINAL AutoAttack FAB-T (fra31/auto-attack, autoattack/fab_pt.py,
                       FABAttack_PT), constructed as AutoAttack 'standard' does: norm='Linf',
                       n_restarts=1, n_iter=100, targeted=True, n_target_classes=9, seed=0, eps,
                       device='cpu'; perturb(x, y) on the clean-correct examples, in chunks of
                       --batch. Needs --autoattack-src.
  aa-standard          the ORIGINAL AutoAttack as a whole (fra31/auto-attack, autoattack/autoattack.py):
                       AutoAttack(model, norm='Linf', eps, version='standard', seed=0, device='cpu')
                       .run_standard_evaluation(x, y, bs=--batch, return_labels=True): APGD-CE, APGD-T,
                       FAB-T, Square with the iterations, restarts, targets and queries AutoAttack sets
                       for 'standard', each on what the earlier ones left. The row keeps the robust accuracy after each stage
                       (from AutoAttack's own log) and the wall time of the whole call, which is the
                       figure the speed comparison with advrob's ensemble uses. Needs --autoattack-src.
Derived rows (no extra attack run): `aa-components` is the per-example worst case over apgd-ce,
apgd-t, fab-t and square (the original AutoAttack 'standard' ensemble at 100 iterations), and
`worst-case` is the per-example worst case over every attack run at that eps (fmn included).
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import random
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import advrob_layout  # noqa: E402

DEFAULT_ATTACKS = "apgd-ce,apgd-t,fab-t,square,autoattack-standard,pgd20,apgd-ce-bpda,pgd20-bpda,fmn"
AA_COMPONENTS = ["apgd-ce", "apgd-t", "fab-t", "square"]
BPDA = {"apgd-ce-bpda": "apgd-ce", "pgd20-bpda": "pgd20"}
# fra31/auto-attack SquareAttack exactly as AutoAttack(version='standard') builds it (autoattack.py).
AA_SQUARE_SETTINGS = {"norm": "Linf", "n_queries": 5000, "p_init": 0.8, "n_restarts": 1, "seed": 0,
                      "loss": "margin", "resc_schedule": False, "targeted": False, "device": "cpu",
                      "verbose": False}
# fra31/auto-attack FABAttack_PT as AutoAttack(version='standard') runs it for 'fab-t' (autoattack.py:
# FABAttack_PT(n_restarts=5, n_iter=100, ...) then targeted=True, n_restarts=1, n_target_classes=9).
AA_FAB_T_SETTINGS = {"norm": "Linf", "n_restarts": 1, "n_iter": 100, "alpha_max": 0.1, "eta": 1.05,
                     "beta": 0.9, "targeted": True, "n_target_classes": 9, "seed": 0, "device": "cpu",
                     "verbose": False}
AUTOATTACK = {}  # filled by load_autoattack(): the SquareAttack and AutoAttack classes, where they came from
TOL = 1e-6  # float32 slack allowed on the budget and the box before an example counts as invalid


load_mnist = advrob_layout.load_mnist



def seed_all(seed=0):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def short_name(dir_):
    base = os.path.basename(os.path.normpath(dir_))
    return re.sub(r"-(ndarray|flex|wgpu|cuda|tch)-s\d+-[0-9a-f]+$", "", base)


def bits(mask):
    return "".join("1" if b else "0" for b in mask.tolist())


@torch.no_grad()
def predict(model, x, batch=1000):
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def make_attack(name, model, eps):
    import torchattacks as ta

    if name == "apgd-ce":
        return ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)
    if name == "apgd-t":
        return ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0)
    if name == "fab-t":
        return ta.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                      n_classes=10, seed=0)
    if name == "square":
        return ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0)
    if name == "autoattack-standard":
        return ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    if name == "pgd20":
        return ta.PGD(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)
    if name == "fgsm":
        return ta.FGSM(model, eps=eps)
    raise SystemExit(f"unknown attack {name!r}")


def load_autoattack(src, declared_commit=None):
    """Import SquareAttack from a fra31/auto-attack source tree (the directory holding autoattack/)."""
    import hashlib
    import subprocess

    src = os.path.abspath(src)
    if not os.path.isfile(os.path.join(src, "autoattack", "square.py")):
        raise SystemExit(f"--autoattack-src {src}: no autoattack/square.py there")
    sys.path.insert(0, src)
    from autoattack.square import SquareAttack  # noqa: E402
    from autoattack import AutoAttack  # noqa: E402
    from autoattack.fab_pt import FABAttack_PT  # noqa: E402

    path = os.path.abspath(sys.modules[SquareAttack.__module__].__file__)
    if not path.startswith(src + os.sep):
        raise SystemExit(f"autoattack was imported from {path}, not from --autoattack-src {src}")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    # git's blob id of square.py: compare with `git ls-tree <commit> autoattack/square.py` upstream.
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    try:
        commit = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip() or None
    except Exception:  # noqa: BLE001  (an exported tree has no .git)
        commit = None
    AUTOATTACK.update(cls=SquareAttack, AutoAttack=AutoAttack, FAB=FABAttack_PT, info={"src": src, "square_py": path, "square_py_sha256": digest,
                                              "square_py_git_blob": blob, "git_commit": commit,
                                              "declared_commit": declared_commit})


# the original AutoAttack's attacks run alone: name -> (class key in AUTOATTACK, settings, class path)
AA_ALONE = {
    "aa-square": ("cls", AA_SQUARE_SETTINGS, "autoattack.square.SquareAttack"),
    "aa-fab-t": ("FAB", AA_FAB_T_SETTINGS, "autoattack.fab_pt.FABAttack_PT"),
}


def run_aa_component(name, model, x, y, eps, clean_ok, batch):
    """One of fra31's attacks (AA_ALONE), constructed as AutoAttack 'standard' does, .perturb
    on the clean-correct examples in chunks of `batch`; the others keep x (not robust anyway)."""
    key, settings, _ = AA_ALONE[name]
    seed_all(0)
    t0 = time.perf_counter()
    atk = AUTOATTACK[key](model, eps=eps, **settings)
    adv = x.clone()
    idx = clean_ok.nonzero().flatten()
    for i in range(0, len(idx), batch):
        j = idx[i:i + batch]
        adv[j] = atk.perturb(x[j].clone(), y[j].clone()).detach()
    return adv, time.perf_counter() - t0


def run_aa_standard(model, x, y, eps, batch, seed=0):
    """fra31's AutoAttack(version='standard', seed=seed) on all of x, as its README runs it;
    returns the adversarial examples, the wall time of the call and the robust accuracy after each
    stage, read from AutoAttack's own log (it keeps no other record of them)."""
    import tempfile

    seed_all(seed)
    with tempfile.TemporaryDirectory() as d:
        log_path = os.path.join(d, "autoattack.log")
        t0 = time.perf_counter()
        aa = AUTOATTACK["AutoAttack"](model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu",
                                      verbose=True, log_path=log_path)
        adv, _ = aa.run_standard_evaluation(x.clone(), y.clone(), bs=batch, return_labels=True)
        wall = time.perf_counter() - t0
        with open(log_path) as f:
            text = f.read()
    stages = [{"attack": m.group(1).lower(), "robust_acc": round(float(m.group(2)) / 100, 6),
               "cumulative_s": float(m.group(3))}
              for m in re.finditer(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)", text)]
    return adv.detach(), wall, stages


def check(model, x, y, adv, eps, clean_ok):
    """Budget/box checks and the robust masks for one attack's output."""
    adv = adv.detach().to(torch.float32)
    finite = torch.isfinite(adv).flatten(1).all(1)
    linf = (adv - x).abs().flatten(1).amax(1)
    budget_viol = (linf - eps).clamp(min=0)
    box_viol = torch.maximum((-adv).flatten(1).amax(1), (adv - 1).flatten(1).amax(1)).clamp(min=0)
    budget_viol = torch.where(finite, budget_viol, torch.full_like(budget_viol, float("inf")))
    box_viol = torch.where(finite, box_viol, torch.full_like(box_viol, float("inf")))
    valid = finite & (budget_viol <= TOL) & (box_viol <= TOL)
    adv_ok = predict(model, torch.nan_to_num(adv)) == y
    robust = clean_ok & adv_ok
    robust_valid = clean_ok & (adv_ok | ~valid)
    return {
        "robust": robust,
        "robust_valid": robust_valid,
        "max_budget_violation": float(budget_viol.max()) + 0.0,
        "max_box_violation": float(box_viol.max()) + 0.0,
        "n_invalid": int((~valid).sum()),
        "n_invalid_successes": int((clean_ok & ~adv_ok & ~valid).sum()),
        "n_nonfinite": int((~finite).sum()),
        "mean_linf": float(linf[finite].mean()) if finite.any() else None,
    }


def run_attack(name, model, st_model, x, y, eps, clean_ok, batch):
    if name in AA_ALONE:
        adv, wall = run_aa_component(name, model, x, y, eps, clean_ok, batch)
        res = check(model, x, y, adv, eps, clean_ok)
        _, settings, cls = AA_ALONE[name]
        res["settings"] = {"class": cls, "eps": eps, **settings,
                           "inputs": "clean-correct examples only", "batch": batch}
        return res, wall
    if name == "aa-standard":
        adv, wall, stages = run_aa_standard(model, x, y, eps, batch)
        res = check(model, x, y, adv, eps, clean_ok)
        res["settings"] = {"class": "autoattack.AutoAttack", "version": "standard", "norm": "Linf", "eps": eps,
                           "seed": 0, "device": "cpu", "bs": batch, "inputs": "all n examples"}
        res["stages"] = stages
        return res, wall
    attacker_model = st_model if name in BPDA else model
    base = BPDA.get(name, name)
    seed_all(0)
    t0 = time.perf_counter()
    atk = make_attack(base, attacker_model, eps)
    advs = [atk(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    wall = time.perf_counter() - t0
    adv = torch.cat(advs)
    res = check(model, x, y, adv, eps, clean_ok)
    if base == "autoattack-standard":
        res["components"] = [
            {"attack": type(a).__name__, "steps": getattr(a, "steps", None),
             "n_queries": getattr(a, "n_queries", None), "n_restarts": getattr(a, "n_restarts", None)}
            for a in atk._autoattack.attacks
        ]
    return res, wall


def run_fmn(model, x, y, clean_ok, batch):
    import foolbox as fb

    seed_all(0)
    t0 = time.perf_counter()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.LInfFMNAttack(steps=100)
    advs = []
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        raw, _, _ = attack(fmodel, xb, fb.criteria.Misclassification(yb), epsilons=None)
        advs.append(raw.detach())
    wall = time.perf_counter() - t0
    adv = torch.cat(advs)
    finite = torch.isfinite(adv).flatten(1).all(1)
    in_box = finite & (adv.flatten(1).amin(1) >= -TOL) & (adv.flatten(1).amax(1) <= 1 + TOL)
    fooled = predict(model, torch.nan_to_num(adv)) != y
    linf = (adv - x).abs().flatten(1).amax(1)
    # Smallest epsilon found per example: 0 when already misclassified, inf when FMN found none.
    min_eps = torch.where(fooled & in_box, linf, torch.full_like(linf, float("inf")))
    min_eps = torch.where(clean_ok, min_eps, torch.zeros_like(min_eps))
    return {
        "min_eps": [None if not np.isfinite(v) else round(float(v), 7) for v in min_eps.tolist()],
        "n_not_found": int((clean_ok & ~torch.isfinite(min_eps)).sum()),
        "n_out_of_box": int((~in_box).sum()),
        "median_min_eps_clean_correct": float(min_eps[clean_ok].median()) if clean_ok.any() else None,
    }, min_eps, wall


def evaluate_model(dir_, x, y, eps_list, attacks, batch, log):
    model, info = advrob_layout.load(dir_)
    st_model, _ = advrob_layout.load(dir_, straight_through=True)
    quantized = info["deploy"]["quantize"] is not None
    clean_ok = predict(model, x) == y
    name = short_name(dir_)
    entry = {"name": name, "dir": os.path.abspath(dir_), **info,
             "clean_acc": float(clean_ok.float().mean()), "clean_correct": bits(clean_ok),
             "results": [], "skipped": []}
    log(f"== {name}: clean accuracy {entry['clean_acc']:.4f} on {len(x)} (deploy {info['deploy']})")

    fmn_min_eps = None
    if "fmn" in attacks:
        try:
            import foolbox  # noqa: F401
        except ImportError:
            entry["skipped"].append({"attack": "fmn", "why": "foolbox not installed"})
        else:
            fmn, fmn_min_eps, wall = run_fmn(model, x, y, clean_ok, batch)
            entry["fmn"] = {**fmn, "wall_s": round(wall, 3)}
            log(f"   fmn: median min eps {fmn['median_min_eps_clean_correct']}, "
                f"not found {fmn['n_not_found']}, {wall:.1f}s")

    for eps in eps_list:
        per_eps = {}
        for att in attacks:
            if att == "fmn":
                continue
            if att in BPDA and not quantized:
                if eps == eps_list[0]:
                    entry["skipped"].append({"attack": att, "why": "model does not quantize its input"})
                continue
            res, wall = run_attack(att, model, st_model, x, y, eps, clean_ok, batch)
            per_eps[att] = res["robust"]
            row = {"attack": att, "eps": eps, "robust_acc": float(res["robust"].float().mean()),
                   "robust_acc_valid": float(res["robust_valid"].float().mean()),
                   "wall_s": round(wall, 3), **{k: v for k, v in res.items() if k not in ("robust", "robust_valid")},
                   "robust": bits(res["robust"])}
            if not torch.equal(res["robust"], res["robust_valid"]):
                row["robust_valid_bits"] = bits(res["robust_valid"])
            entry["results"].append(row)
            flag = "" if res["n_invalid"] == 0 else (f"  !! {res['n_invalid']} outside budget/box "
                                                     f"(max {res['max_budget_violation']:.3g}/{res['max_box_violation']:.3g})")
            log(f"   eps {eps:<5} {att:20s} robust {row['robust_acc']:.4f}  {wall:7.1f}s{flag}")
        if fmn_min_eps is not None:
            robust = clean_ok & (fmn_min_eps > eps)
            per_eps["fmn"] = robust
            entry["results"].append({"attack": "fmn", "eps": eps, "robust_acc": float(robust.float().mean()),
                                     "robust_acc_valid": float(robust.float().mean()),
                                     "wall_s": entry["fmn"]["wall_s"], "derived": "from fmn min_eps",
                                     "robust": bits(robust)})
            log(f"   eps {eps:<5} {'fmn (min-norm)':20s} robust {float(robust.float().mean()):.4f}")
        derived = []
        if all(a in per_eps for a in AA_COMPONENTS):
            derived.append(("aa-components", AA_COMPONENTS))
        if per_eps:
            derived.append(("worst-case", list(per_eps)))
        for dname, members in derived:
            robust = clean_ok.clone()
            for m in members:
                robust &= per_eps[m]
            entry["results"].append({"attack": dname, "eps": eps, "robust_acc": float(robust.float().mean()),
                                     "derived": "per-example AND of " + ", ".join(members),
                                     "robust": bits(robust)})
            log(f"   eps {eps:<5} {dname:20s} robust {float(robust.float().mean()):.4f}")
    return entry


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("torchattacks", "foolbox", "eagerpy", "safetensors"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def print_table(doc, log):
    eps_list = doc["meta"]["eps"]
    log("\nrobust accuracy (clean-correct AND adversarial-correct), N = %d" % doc["meta"]["n"])
    for m in doc["models"]:
        log(f"\n{m['name']}  clean {m['clean_acc']:.4f}")
        log("  %-20s " % "attack" + " ".join(f"eps={e:<7}" for e in eps_list) + "  seconds")
        names = list(dict.fromkeys(r["attack"] for r in m["results"]))
        for a in names:
            rows = {r["eps"]: r for r in m["results"] if r["attack"] == a}
            cells = " ".join(f"{rows[e]['robust_acc']:<11.4f}" if e in rows else f"{'-':<11}" for e in eps_list)
            secs = "/".join(f"{rows[e]['wall_s']:.0f}" for e in eps_list if e in rows and "wall_s" in rows[e]
                            and not rows[e].get("derived"))
            log(f"  {a:20s} {cells} {secs}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", action="append", required=True, help="advrob checkpoint directory (repeatable)")
    ap.add_argument("--mnist", default="../shared/data/mnist")
    ap.add_argument("--n", type=int, default=1000, help="first N test images")
    ap.add_argument("--eps", default="0.1,0.2,0.3")
    ap.add_argument("--attacks", default=None,
                    help=f"default {DEFAULT_ATTACKS} (+aa-square when --autoattack-src is given)")
    ap.add_argument("--autoattack-src", default=None,
                    help="a fra31/auto-attack source tree (holding autoattack/), for aa-square and aa-standard")
    ap.add_argument("--autoattack-commit", default=None,
                    help="the fra31/auto-attack commit the tree was exported from, recorded as given (for a "
                         "tree without .git; the git blob id of square.py is recorded either way)")
    ap.add_argument("--batch", type=int, default=1000, help="examples per attack call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    seed_all(0)
    eps_list = [float(e) for e in args.eps.split(",") if e]
    if args.attacks is None:
        args.attacks = DEFAULT_ATTACKS + (",aa-square" if args.autoattack_src else "")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if "aa-square" in attacks or "aa-standard" in attacks or "aa-fab-t" in attacks:
        if not args.autoattack_src:
            raise SystemExit("aa-square, aa-fab-t and aa-standard need --autoattack-src (a fra31/auto-attack checkout)")
        load_autoattack(args.autoattack_src, args.autoattack_commit)
    x, y = load_mnist(args.mnist, "test")
    x, y = x[:args.n].contiguous(), y[:args.n].contiguous()

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    doc = {"meta": {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "versions": versions(), "n": len(x), "eps": eps_list, "attacks": attacks,
                    "mnist": os.path.abspath(args.mnist), "split": "test, first n", "threads": args.threads,
                    "seed": 0, "tolerance": TOL, "command": " ".join(sys.argv),
                    **({"autoattack": AUTOATTACK["info"]} if AUTOATTACK else {}),
                    "robust_definition": "clean-correct AND correct on the attack's output (deployed model)",
                    "notes": [
                        "torchattacks AutoAttack(version='standard') runs APGD-CE, APGD-T, FAB-T with steps=10 "
                        "(torchattacks' default), not the original 100; 'aa-components' is the per-example worst "
                        "case of the 100-step components run separately",
                        "quantized models: the faithful model has a zero input gradient (x*0 + q.detach()); "
                        "*-bpda rows attack the straight-through model and are judged on the faithful one",
                    ]},
           "models": []}
    for d in args.model_dir:
        doc["models"].append(evaluate_model(d, x, y, eps_list, attacks, args.batch, log))
        doc["meta"]["total_wall_s"] = round(time.perf_counter() - t0, 1)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:  # rewritten after each model, so a cut run keeps what it did
            json.dump(doc, f, indent=1)
    print_table(doc, log)
    log(f"\nwrote {args.out} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
