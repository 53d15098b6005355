#!/usr/bin/env python3
"""advrob-verify against auto_LiRPA (IBP, CROWN) and an exact MILP (HiGHS), on advrob's MLPs.

For every advrob MLP checkpoint under --models-root (directories matching --glob) and every ε of
--eps, on the first --images MNIST test images (pixels/255 in float32):

1. runs advrob's `bounds_json` example (crates/advrob-verify/examples/bounds_json.rs), which writes
   each logit's IBP and CROWN bounds over the box x_L = max(x − ε, 0), x_U = min(x + ε, 1) and the
   complete verifier's verdict (verified / attacked / misclassified / unknown);
2. computes the same logit bounds with auto_LiRPA (`compute_bounds(method='IBP')` and
   `method='CROWN'`, i.e. backward) on the same network over the same box, in float32, and, as a
   reference for both, in float64; reports the largest |Δ| per model, ε and method.
   What is bounded, on both sides: the network `Linear → ReLU → Linear` on the box fed to its first
   layer. A quantising deployment (deploy.json "quantize": L) maps each pixel to
   round(x·(L−1))/(L−1) (ties to even, float32): monotone, so the box fed to the network is
   [q(x_L), q(x_U)], as advrob's network.rs does. The logit scale of deploy.json is NOT applied:
   advrob's `Network` does not keep it, so `logit_bounds` (and bounds_json) report the last layer's
   outputs; both scaled and unscaled comparisons are recorded (`max_abs_diff` is the unscaled one).
   auto_LiRPA's ReLU lower slope is its default 'adaptive' (`activation_bound_option`): slope 1
   where u/(u − l) > 1/2, i.e. u > −l, else 0: the same rule as advrob's `default_alpha`. It is
   set explicitly below.
3. decides, for a few images per model at each ε of --milp-eps, the sign of the exact minimum of every
   margin z_y − z_j over the box with a big-M MILP (HiGHS through highspy, one thread): inputs in
   the box (for a quantising model: on its grid, integer multiples of 1/(L−1) in
   [q(x_L), q(x_U)], exactly the set of values the deployed model's first layer can see),
   pre-activation bounds by interval arithmetic of the first layer in float64 (exact for a box),
   per unstable ReLU a binary. By default each MILP stops as soon as the sign of its minimum is
   known (HiGHS' dual bound > 0, or a point with a negative margin), which is what the verdicts
   need; --milp-exact solves to optimality instead. Either way there is a time limit per MILP
   (--milp-time-limit; --milp-short-limit for the remaining classes of an image whose
   counterexample is already confirmed), and the bounds HiGHS had are kept: `bounds_on_min` is
   [dual bound, best point's value] per class, `exact_min` the value where HiGHS proved it
   optimal. Undecided margins of images advrob decided get a second try (--milp-retry-limit).
   The images: --milp-unknown of advrob's `unknown` images (fewest unstable ReLUs first), then
   --milp-verified verified and --milp-attacked attacked ones, those that needed the most branch
   and bound first. Agreement: verified ⇒ every margin's minimum > 0 (dual bound > 0);
   attacked ⇒ some margin's minimum < 0. A point with a negative margin counts only once the
   deployed torch model's own float32 forward pass misclassifies it (at a pixel pre-image in the
   box of the grid point, for a quantising model).

    /work/venv/bin/python peers/verify_vs_lirpa.py \\
        --models-root RUN/models --mnist ../shared/data/mnist \\
        --bounds-json-bin target/debug/examples/bounds_json --images 100 \\
        --out peers/results/verify-vs-lirpa-YYYY-MM-DD.json

Needs torch, numpy, safetensors, auto_LiRPA (0.7.1 from its source tree: PyPI's 0.2/0.3 pin
torch < 1.13 and do not import under torch 2.x) and highspy. Keeps torch and HiGHS on one thread.
"""

import argparse
import glob
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import advrob_layout  # noqa: E402  (the peers' advrob checkpoint reader)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# the network and its box


class Net:
    """An advrob MLP as the verifiers see it: float32 layers, the input map, the logit scale."""

    def __init__(self, model_dir):
        self.dir = model_dir
        self.model, self.info = advrob_layout.load(model_dir)
        cfg = self.info["config"]
        if cfg.get("arch", "mlp") != "mlp":
            raise ValueError(f"{model_dir}: arch {cfg.get('arch')}: only MLPs")
        dep = self.info["deploy"]
        self.quantize = dep.get("quantize")
        self.logit_scale = float(dep.get("logit_scale", 1.0))
        if dep.get("normalize") is not None:
            raise ValueError(f"{model_dir}: deploy.json normalize is not implemented here")
        self.steps = None if self.quantize is None else np.float32(max(int(self.quantize), 2) - 1)
        # float32 weights as torch Linear holds them: weight [out, in]
        self.weights = [l.weight.detach().numpy().astype(np.float32) for l in self.model.layers]
        self.biases = [l.bias.detach().numpy().astype(np.float32) for l in self.model.layers]
        if len(self.weights) != 2:
            raise ValueError(f"{model_dir}: {len(self.weights) - 1} hidden layers; the MILP here is for one")

    def bare(self, dtype=torch.float32):
        """The network without its deployment wrapper: Linear → ReLU → … → Linear."""
        mods = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if i + 1 < len(self.weights):
                mods.append(nn.ReLU())
        net = nn.Sequential(*mods).to(dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def map_pixels(self, x):
        """advrob's PixelMap in float32: round(x·s)/s, ties to even (np.round), or the identity."""
        x = np.asarray(x, dtype=np.float32)
        if self.steps is None:
            return x
        return (np.round(x * self.steps) / self.steps).astype(np.float32)

    def box(self, images, eps):
        """(pixel lo, pixel hi, mapped lo, mapped hi), float32 [N, 784], as bounds_json builds them."""
        x = images.reshape(images.shape[0], -1).astype(np.float32)
        e = np.float32(eps)
        lo = np.maximum(x - e, np.float32(0.0))
        hi = np.minimum(x + e, np.float32(1.0))
        return lo, hi, self.map_pixels(lo), self.map_pixels(hi)


# ---------------------------------------------------------------------------------------------
# advrob's side


def run_bounds_json(binary, model_dir, mnist, eps, images, out, max_domains, reuse):
    if reuse and os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
        if doc.get("images") == images and doc.get("max_domains") == max_domains and \
                abs(doc.get("eps", -1) - eps) < 1e-6 and doc.get("model") == model_dir:
            return doc, None
    t0 = time.time()
    subprocess.run([binary, model_dir, mnist, repr(eps), str(images), out, str(max_domains)],
                   check=True, stdout=subprocess.DEVNULL)
    secs = time.time() - t0
    with open(out) as f:
        return json.load(f), secs


# ---------------------------------------------------------------------------------------------
# auto_LiRPA's side


def lirpa_bounds(net, mlo, mhi, dtype, chunk=100):
    """{'IBP': (lower, upper), 'CROWN': (lower, upper)} as numpy float64, [N, classes]."""
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    bare = net.bare(dtype)
    dummy = torch.zeros(1, mlo.shape[1], dtype=dtype)
    bm = BoundedModule(bare, dummy, device="cpu", verbose=0,
                       bound_opts={"activation_bound_option": "adaptive"})
    out = {"IBP": ([], []), "CROWN": ([], [])}
    for s in range(0, mlo.shape[0], chunk):
        lo = torch.from_numpy(mlo[s:s + chunk]).to(dtype)
        hi = torch.from_numpy(mhi[s:s + chunk]).to(dtype)
        centre = (lo + hi) / 2
        bt = BoundedTensor(centre, PerturbationLpNorm(norm=np.inf, x_L=lo, x_U=hi))
        for method in ("IBP", "CROWN"):
            with torch.no_grad():
                l, u = bm.compute_bounds(x=(bt,), method=method)
            out[method][0].append(l.detach().double().numpy())
            out[method][1].append(u.detach().double().numpy())
    return {m: (np.concatenate(v[0]), np.concatenate(v[1])) for m, v in out.items()}


def max_diff(a, b):
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    i = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[i]), [int(k) for k in i]


def compare_bounds(doc, lirpa32, lirpa64, scale):
    """Per method, the largest |Δ| of advrob's logit bounds against auto_LiRPA float32 and the
    float64 reference, lower and upper together."""
    rows = doc["rows"]
    out = {}
    for m_adv, m_lirpa in (("ibp", "IBP"), ("crown", "CROWN")):
        adv_l = np.array([r[m_adv]["lower"] for r in rows], np.float64)
        adv_u = np.array([r[m_adv]["upper"] for r in rows], np.float64)
        n = adv_l.shape[0]
        l32, u32 = (v[:n] for v in lirpa32[m_lirpa])
        l64, u64 = (v[:n] for v in lirpa64[m_lirpa])
        dl, il = max_diff(adv_l, l32)
        du, iu = max_diff(adv_u, u32)
        rl, _ = max_diff(adv_l, l64)
        ru, _ = max_diff(adv_u, u64)
        ll, _ = max_diff(l32, l64)
        lu, _ = max_diff(u32, u64)
        mag = float(max(np.abs(l64).max(), np.abs(u64).max()))
        entry = {
            "max_abs_diff": max(dl, du),
            "max_abs_diff_lower": dl, "argmax_lower": il,
            "max_abs_diff_upper": du, "argmax_upper": iu,
            "advrob_vs_float64": max(rl, ru),
            "lirpa32_vs_float64": max(ll, lu),
            "max_abs_bound": mag,
            "advrob_lower_above_float64_lower": float(np.max(adv_l - l64)),
            "advrob_upper_below_float64_upper": float(np.max(u64 - adv_u)),
            "within_1e-4": max(dl, du) <= 1e-4,
        }
        if scale != 1.0:
            sl, _ = max_diff(adv_l, scale * l32)
            su, _ = max_diff(adv_u, scale * u32)
            entry["max_abs_diff_if_scaled_by_logit_scale"] = max(sl, su)
        out[m_adv] = entry
    return out


# ---------------------------------------------------------------------------------------------
# the exact MILP


def first_layer_bounds(net, mlo, mhi):
    """Pre-activation bounds of the hidden layer over the (mapped) box, float64: exact."""
    w = net.weights[0].astype(np.float64)  # [h, n]
    b = net.biases[0].astype(np.float64)
    lo, hi = mlo.astype(np.float64), mhi.astype(np.float64)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    return wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b


def margin_milp(net, mlo, mhi, y, j, time_limit, grid, decide=True, start=None):
    """min z_y − z_j (last layer's outputs, unscaled) over the box; a dict with HiGHS' result.

    start: a point of the box (the first layer's input; on the grid for a quantising model) given
    to HiGHS as its first solution (from `pgd_starts`).

    decide: stop as soon as the sign of the minimum is known (HiGHS' dual bound > 0: the margin
    is positive everywhere; or a point with a negative margin), through HiGHS' MIP interrupt
    callback; else solve to optimality (gap 1e-6) or the time limit."""
    import highspy

    w1 = net.weights[0].astype(np.float64)
    b1 = net.biases[0].astype(np.float64)
    w2 = net.weights[1].astype(np.float64)
    b2 = net.biases[1].astype(np.float64)
    n, hdim = w1.shape[1], w1.shape[0]
    l, u = first_layer_bounds(net, mlo, mhi)
    c = w2[y] - w2[j]
    offset = float(b2[y] - b2[j])

    # columns: x (n), then per live neuron a_k, then per unstable neuron δ_k
    # x is the first layer's input; with `grid` it is k/s for an integer k (column x' = k, W / s)
    if grid is not None:
        s = float(grid)
        xl = np.round(mlo.astype(np.float64) * s)
        xu = np.round(mhi.astype(np.float64) * s)
        wx = w1 / s
    else:
        xl, xu = mlo.astype(np.float64), mhi.astype(np.float64)
        wx = w1
    active = [k for k in range(hdim) if l[k] >= 0]
    unstable = [k for k in range(hdim) if l[k] < 0 < u[k]]
    live = active + unstable
    acol = {k: n + i for i, k in enumerate(live)}
    dcol = {k: n + len(live) + i for i, k in enumerate(unstable)}
    ncol = n + len(live) + len(unstable)
    col_lo = np.concatenate([xl, [max(l[k], 0.0) for k in live], np.zeros(len(unstable))])
    col_hi = np.concatenate([xu, [u[k] for k in live], np.ones(len(unstable))])
    cost = np.zeros(ncol)
    for k in live:
        cost[acol[k]] = c[k]
    integ = [0] * ncol
    if grid is not None:
        integ[:n] = [1] * n
    for k in unstable:
        integ[dcol[k]] = 1

    starts, idx, vals, rlo, rhi = [0], [], [], [], []

    def row(cols, coefs, lo_, hi_):
        idx.extend(cols)
        vals.extend(coefs)
        starts.append(len(idx))
        rlo.append(lo_)
        rhi.append(hi_)

    xs = list(range(n))
    inf = highspy.kHighsInf
    for k in active:  # a = W x + b
        row(xs + [acol[k]], list(-wx[k]) + [1.0], b1[k], b1[k])
    for k in unstable:
        # a ≥ W x + b
        row(xs + [acol[k]], list(-wx[k]) + [1.0], b1[k], inf)
        # a ≤ W x + b − l (1 − δ)  ⇔  a − W x − l δ ≤ b − l
        row(xs + [acol[k], dcol[k]], list(-wx[k]) + [1.0, -l[k]], -inf, b1[k] - l[k])
        # a ≤ u δ
        row([acol[k], dcol[k]], [1.0, -u[k]], -inf, 0.0)

    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = len(rlo)
    lp.col_cost_ = cost
    lp.col_lower_ = col_lo
    lp.col_upper_ = col_hi
    lp.row_lower_ = np.array(rlo, dtype=np.float64)
    lp.row_upper_ = np.array(rhi, dtype=np.float64)
    lp.offset_ = offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(idx, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(vals, dtype=np.float64)
    lp.a_matrix_.num_col_ = ncol
    lp.a_matrix_.num_row_ = len(rlo)
    lp.integrality_ = [highspy.HighsVarType.kInteger if t else highspy.HighsVarType.kContinuous for t in integ]

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", 1e-6)
    h.setOptionValue("mip_abs_gap", 1e-6)
    h.passModel(lp)
    start_value = None
    if start is not None:
        xs0 = np.clip(np.asarray(start, np.float64), mlo.astype(np.float64), mhi.astype(np.float64))
        pre = w1 @ xs0 + b1
        sol = np.zeros(ncol)
        sol[:n] = np.round(xs0 * grid) if grid is not None else xs0
        for k in live:
            sol[acol[k]] = max(pre[k], 0.0)
        for k in unstable:
            sol[dcol[k]] = 1.0 if pre[k] > 0 else 0.0
        start_value = float(c[live] @ np.maximum(pre[live], 0.0) + offset) if live else offset
        hs = highspy.HighsSolution()
        hs.col_value = list(sol)
        h.setSolution(hs)
    if decide:
        def interrupt(kind, message, out, inp, user):
            if out.mip_dual_bound > 0 or out.mip_primal_bound < 0:
                inp.user_interrupt = True
        h.setCallback(interrupt, None)
        h.startCallback(highspy.cb.HighsCallbackType.kCallbackMipInterrupt)
    t0 = time.time()
    h.run()
    secs = time.time() - t0
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    res = {
        "class": int(j), "status": status, "seconds": round(secs, 3), "start_value": start_value,
        "unstable": len(unstable),
        "dual_bound": float(info.mip_dual_bound),
        "primal": None, "x": None,
    }
    if info.primal_solution_status >= 2:  # a feasible point
        res["primal"] = float(info.objective_function_value)
        sol = np.array(h.getSolution().col_value[:n], dtype=np.float64)
        res["x"] = sol / float(grid) if grid is not None else sol
    res["optimal"] = status == "Optimal"
    res["sign"] = ("positive" if res["dual_bound"] > 0 else
                   "negative" if res["primal"] is not None and res["primal"] < 0 else "undecided")
    return res


def torch_logits(net, pixels):
    """The deployed model's float32 logits (input map and logit scale applied) at pixel points [m, n]."""
    with torch.no_grad():
        return net.model(torch.from_numpy(pixels.astype(np.float32)).reshape(-1, 1, 28, 28)).numpy()


def pgd_starts(net, lo, hi, mlo, mhi, y, steps=100, restarts=8, seed=0):
    """Per class j, the point of the first layer's input box with the smallest margin z_y − z_j a
    torch PGD found (signed gradient steps on the margin, float32, `restarts` random starts plus
    the box centre, step size from a quarter of the box down to 1/50 of it), for a quantising model
    computed on the continuous box [q(x_L), q(x_U)] and rounded to the grid. Independent of
    advrob: only a first solution for HiGHS (the MILP still checks it)."""
    g = torch.Generator().manual_seed(seed)
    bare = net.bare()
    k = net.weights[-1].shape[0]
    lo_t, hi_t = torch.from_numpy(mlo.astype(np.float32)), torch.from_numpy(mhi.astype(np.float32))
    width = hi_t - lo_t
    targets = [j for j in range(k) if j != y]
    m = len(targets) * (restarts + 1)
    x = lo_t + width * torch.rand(m, lo_t.numel(), generator=g)
    x[::restarts + 1] = (lo_t + hi_t) / 2
    tj = torch.tensor([j for j in targets for _ in range(restarts + 1)])
    best = {j: (math.inf, None) for j in targets}
    for t in range(steps):
        x = x.detach().requires_grad_(True)
        z = bare(x)
        margin = z[:, y] - z.gather(1, tj[:, None])[:, 0]
        margin.sum().backward()
        step = width * (0.25 * (1 - t / steps) + 0.02)
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - step * x.grad.sign(), lo_t), hi_t)
    xs = x.detach().numpy().astype(np.float64)
    if net.steps is not None:
        s = float(net.steps)
        xs = np.clip(np.round(xs * s) / s, mlo.astype(np.float64), mhi.astype(np.float64))
    w1, b1 = net.weights[0].astype(np.float64), net.biases[0].astype(np.float64)
    w2, b2 = net.weights[1].astype(np.float64), net.biases[1].astype(np.float64)
    z = np.maximum(xs @ w1.T + b1, 0) @ w2.T + b2
    for r in range(m):
        j = int(tj[r])
        v = float(z[r, y] - z[r, j])
        if v < best[j][0]:
            best[j] = (v, xs[r])
    return {j: v[1] for j, v in best.items()}, {j: v[0] for j, v in best.items()}


def check_primal(net, lo, hi, y, j, r, x, grid):
    """With a negative primal point x (the first layer's input), the deployed torch model's float32
    verdict at a pixel pre-image of x in the box; True when it misclassifies."""
    if x is None or r["primal"] is None or r["primal"] >= 0:
        return False
    # x itself for an identity map; else x clipped to the pixel box (a grid value below lo is
    # q(lo), one above hi is q(hi), so the clipped point still maps to x)
    px = np.clip(x, lo.astype(np.float64), hi.astype(np.float64)).astype(np.float32)
    assert np.all(px >= lo) and np.all(px <= hi)
    if grid is not None:
        assert np.allclose(net.map_pixels(px), x, atol=1e-6), "grid pre-image"
    z = torch_logits(net, px[None])[0]
    r["torch_margin_at_primal"] = float(z[y]) - float(z[j])  # logit scale applied
    r["torch_misclassified_at_primal"] = bool(int(np.argmax(z)) != y)
    return r["torch_misclassified_at_primal"]


def milp_image(net, lo, hi, mlo, mhi, y, crown, time_limit, short_limit, decide=True):
    """Every margin's MILP for one image, the most threatened class first (by the PGD starts'
    margins, then advrob's CROWN logit bounds: lower(z_y) − upper(z_j)); once a counterexample is confirmed by the torch
    forward pass, the remaining classes get `short_limit` seconds (the image is decided)."""
    grid = None if net.steps is None else float(net.steps)
    cl, cu = crown
    starts, start_values = pgd_starts(net, lo, hi, mlo, mhi, y)
    order = sorted((j for j in range(len(cl)) if j != y), key=lambda j: (start_values[j], cl[y] - cu[j]))
    per = []
    broken = False
    for j in order:
        r = margin_milp(net, mlo, mhi, y, j, short_limit if broken else time_limit, grid, decide,
                        starts.get(j))
        r["time_limit_s"] = short_limit if broken else time_limit
        x = r.pop("x")
        broken = check_primal(net, lo, hi, y, j, r, x, grid) or broken
        per.append(r)
    per.sort(key=lambda r: r["class"])
    return per


def milp_row(i, label, verdict, per, secs):
    dec = milp_decision(per)
    return {
        "image": i, "label": label, "advrob": verdict, "milp_decision": dec,
        "agreement": agreement(verdict["status"], dec),
        "exact_min": {str(p["class"]): (p["primal"] if p["optimal"] else None) for p in per},
        "bounds_on_min": {str(p["class"]): [p["dual_bound"], p["primal"]] for p in per},
        "sign": {str(p["class"]): p["sign"] for p in per},
        "min_over_classes_primal": min((p["primal"] for p in per if p["primal"] is not None), default=None),
        "min_over_classes_dual": min(p["dual_bound"] for p in per),
        "time_limit_hit": [p["class"] for p in per if p["status"] == "Time limit reached"],
        "seconds": round(secs, 2),
        "per_class": per,
    }


def log_row(row):
    v = row["advrob"]
    log(f"   MILP #{row['image']} (label {row['label']}): advrob {v['status']} (domains {v['domains']}), "
        f"MILP {row['milp_decision']}: min primal {row['min_over_classes_primal']}, min dual "
        f"{row['min_over_classes_dual']:.4g}, {row['seconds']} s, time limit on {row['time_limit_hit']} "
        f"-> {row['agreement']}")


def retry_undecided(doc, models_root, images, limit, short_limit, decide=True, unknown=False, out=None):
    """Re-solve, with `limit` seconds, the undecided margins of every MILP image whose advrob
    verdict is decided (verified, attacked; with `unknown`, unknown too) and whose MILP decision
    is not; writes `doc` to `out` after each image."""
    wanted = ("verified", "attacked", "unknown") if unknown else ("verified", "attacked")
    for m in doc["models"]:
        net = None
        for eps, e in m["eps"].items():
            for k, row in enumerate(e.get("milp", [])):
                if row["advrob"]["status"] not in wanted or row["milp_decision"] != "undecided":
                    continue
                net = net or Net(os.path.join(models_root, m["model"]))
                grid = None if net.steps is None else float(net.steps)
                i, y = row["image"], row["label"]
                lo, hi, mlo, mhi = (v[0] for v in net.box(images[i:i + 1], float(eps)))
                t0 = time.time()
                starts, start_values = pgd_starts(net, lo, hi, mlo, mhi, y)
                per = {p["class"]: p for p in row["per_class"]}
                todo = sorted((c for c, p in per.items() if p["sign"] == "undecided"), key=lambda c: start_values[c])
                broken = any(p.get("torch_misclassified_at_primal") for p in per.values())
                for c in todo:
                    r = margin_milp(net, mlo, mhi, y, c, short_limit if broken else limit, grid, decide, starts[c])
                    r["time_limit_s"] = short_limit if broken else limit
                    r["retried_after"] = {key: per[c][key] for key in ("status", "seconds", "dual_bound", "primal")}
                    broken = check_primal(net, lo, hi, y, c, r, r.pop("x"), grid) or broken
                    per[c] = r
                per = [per[c] for c in sorted(per)]
                new = milp_row(i, y, row["advrob"], per, row["seconds"] + time.time() - t0)
                new["retried"] = True
                e["milp"][k] = new
                log(f"   retry {m['model']} eps {eps}:")
                log_row(new)
                if out:
                    with open(out, "w") as f:
                        json.dump(doc, f, indent=1)


def milp_decision(per, tol=0.0):
    """'robust' (every margin's dual bound > 0), 'not robust' (a margin's primal < 0, confirmed by
    the torch forward pass), or 'undecided'."""
    if any(r.get("torch_misclassified_at_primal") for r in per):
        return "not robust"
    if all(r["dual_bound"] > tol for r in per):
        return "robust"
    if any(r["primal"] is not None and r["primal"] < 0 for r in per):
        return "not robust (MILP point, not confirmed by the float32 forward pass)"
    return "undecided"


def agreement(status, decision):
    if status == "verified":
        return {"robust": "agree", "not robust": "DISAGREE (soundness bug: verified but a counterexample exists)"}.get(
            decision, "unconfirmed" if decision == "undecided" else "DISAGREE?")
    if status == "attacked":
        return {"not robust": "agree", "robust": "DISAGREE (attacked but the MILP proves robustness)"}.get(
            decision, "unconfirmed")
    if status == "unknown":
        return f"advrob unknown; MILP: {decision}"
    return "n/a"


def pick_milp_images(rows, max_unknown, n_verified, n_attacked):
    """advrob's unknowns (fewest unstable ReLUs first, at most max_unknown; None: all), then
    verified and attacked images, those that needed the most branch and bound first."""
    unknown = sorted((r for r in rows if r["verdict"]["status"] == "unknown"),
                     key=lambda r: (r["verdict"]["unstable"], r["index"]))
    picked = [r["index"] for r in unknown][:max_unknown]

    def by_domains(status, n):
        rs = [r for r in rows if r["verdict"]["status"] == status]
        rs.sort(key=lambda r: (-r["verdict"]["domains"], r["verdict"]["root_bound"]))
        return [r["index"] for r in rs][:n]

    return picked + by_domains("verified", n_verified) + by_domains("attacked", n_attacked)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-root", required=True)
    ap.add_argument("--glob", default="*-ndarray-s42-*", help="model directories under --models-root")
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--bounds-json-bin", required=True)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.1])
    ap.add_argument("--max-domains", type=int, default=2000)
    ap.add_argument("--milp-eps", type=float, nargs="*", default=[0.02, 0.1],
                    help="the ε (among --eps) at which the MILPs run")
    ap.add_argument("--milp-unknown", type=int, default=1,
                    help="advrob-unknown images per model for the MILP (-1: all)")
    ap.add_argument("--milp-verified", type=int, default=2)
    ap.add_argument("--milp-attacked", type=int, default=2)
    ap.add_argument("--milp-time-limit", type=float, default=30.0, help="seconds per margin MILP")
    ap.add_argument("--milp-short-limit", type=float, default=3.0,
                    help="seconds per margin MILP once the image has a confirmed counterexample")
    ap.add_argument("--milp-retry-limit", type=float, default=120.0,
                    help="seconds for a second try at the undecided margins of images advrob decided (0: none)")
    ap.add_argument("--retry-only", action="store_true",
                    help="only the second tries, on the MILPs of an existing --out")
    ap.add_argument("--retry-unknown", action="store_true",
                    help="give the second tries to advrob's unknown images too")
    ap.add_argument("--milp-exact", action="store_true",
                    help="solve every margin MILP to optimality (or the time limit) instead of stopping "
                         "when its sign is known")
    ap.add_argument("--work", default=None,
                    help="where bounds_json writes its JSON (default: TMPDIR/advrob-verify-vs-lirpa)")
    ap.add_argument("--reuse", action="store_true", help="reuse bounds_json outputs already in --work")
    ap.add_argument("--no-milp", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(1)
    import auto_LiRPA
    import highspy

    work = args.work or os.path.join(tempfile.gettempdir(), "advrob-verify-vs-lirpa")
    images, labels = advrob_layout.load_mnist(args.mnist, "test")
    images = images[:args.images].numpy().reshape(args.images, -1)
    labels = labels[:args.images].numpy()
    if args.retry_only:
        with open(args.out) as f:
            doc = json.load(f)
        retry_undecided(doc, args.models_root, images, args.milp_retry_limit, args.milp_short_limit,
                        not args.milp_exact, args.retry_unknown, args.out)
        doc["settings"].setdefault("retry_passes", []).append(
            {"limit_s": args.milp_retry_limit, "unknown_too": args.retry_unknown})
        write_summary(doc, args.out)
        return
    os.makedirs(work, exist_ok=True)
    dirs = sorted(d for d in glob.glob(os.path.join(args.models_root, args.glob)) if os.path.isdir(d))
    if not dirs:
        raise SystemExit(f"no model directories {args.glob} under {args.models_root}")

    h = highspy.Highs()
    doc = {
        "what": "advrob-verify's IBP/CROWN logit bounds against auto_LiRPA, its verdicts against an exact MILP",
        "versions": {
            "auto_LiRPA": auto_LiRPA.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "highspy": h.version(), "python": platform.python_version(),
        },
        "settings": {
            "images": args.images, "eps": args.eps, "max_domains": args.max_domains,
            "milp_eps": args.milp_eps, "milp_unknown": args.milp_unknown,
            "milp_verified": args.milp_verified, "milp_attacked": args.milp_attacked,
            "milp_time_limit_s": args.milp_time_limit, "milp_short_limit_s": args.milp_short_limit,
            "milp_retry_limit_s": args.milp_retry_limit,
            "milp_mode": "exact" if args.milp_exact else "decide (stop when the sign is known)", "bounds_json": os.path.abspath(args.bounds_json_bin),
            "lirpa_bound_opts": {"activation_bound_option": "adaptive"},
            "compared": "the last layer's outputs (logit scale not applied: advrob's Network does not "
                        "keep it), over [q(x_L), q(x_U)] for a quantising model",
        },
        "models": [],
    }
    for d in dirs:
        name = os.path.basename(d)
        net = Net(d)
        log(f"== {name} (quantize {net.quantize}, logit_scale {net.logit_scale})")
        entry = {"model": name, "quantize": net.quantize, "logit_scale": net.logit_scale,
                 "weights_sha256": net.info["weights_sha256"], "eps": {}}
        for eps in args.eps:
            out = os.path.join(work, f"{name}-eps{eps}.json")
            bj, secs = run_bounds_json(args.bounds_json_bin, d, args.mnist, eps, args.images, out,
                                       args.max_domains, args.reuse)
            assert [r["label"] for r in bj["rows"]] == [int(v) for v in labels], "labels differ"
            lo, hi, mlo, mhi = net.box(images, eps)
            t0 = time.time()
            l32 = lirpa_bounds(net, mlo, mhi, torch.float32)
            l64 = lirpa_bounds(net, mlo, mhi, torch.float64)
            lsecs = time.time() - t0
            cmp = compare_bounds(bj, l32, l64, net.logit_scale)
            counts = {}
            for r in bj["rows"]:
                counts[r["verdict"]["status"]] = counts.get(r["verdict"]["status"], 0) + 1
            e = {"bounds_json_seconds": None if secs is None else round(secs, 2),
                 "lirpa_seconds": round(lsecs, 2), "verdicts": counts, "bounds": cmp}
            log(f"   eps {eps}: ibp max|Δ| {cmp['ibp']['max_abs_diff']:.3g}, crown max|Δ| "
                f"{cmp['crown']['max_abs_diff']:.3g}; verdicts {counts}")
            if not args.no_milp and any(abs(eps - m) < 1e-12 for m in args.milp_eps):
                picks = pick_milp_images(bj["rows"], None if args.milp_unknown < 0 else args.milp_unknown,
                                         args.milp_verified, args.milp_attacked)
                milps = []
                for i in picks:
                    r = bj["rows"][i]
                    y = int(r["label"])
                    t1 = time.time()
                    per = milp_image(net, lo[i], hi[i], mlo[i], mhi[i], y,
                                     (r["crown"]["lower"], r["crown"]["upper"]), args.milp_time_limit,
                                     args.milp_short_limit, not args.milp_exact)
                    row = milp_row(i, y, r["verdict"], per, time.time() - t1)
                    milps.append(row)
                    log_row(row)
                e["milp"] = milps
            entry["eps"][str(eps)] = e
            with open(args.out, "w") as f:  # progress
                json.dump(doc | {"models": doc["models"] + [entry]}, f, indent=1)
        doc["models"].append(entry)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    if args.milp_retry_limit > 0:
        retry_undecided(doc, args.models_root, images, args.milp_retry_limit, args.milp_short_limit,
                        not args.milp_exact, args.retry_unknown, args.out)
    write_summary(doc, args.out)


def write_summary(doc, out):
    summary = {"max_abs_diff": {}, "milp_disagreements": []}
    for m in doc["models"]:
        for eps, e in m["eps"].items():
            for meth, c in e["bounds"].items():
                summary["max_abs_diff"][f"{m['model']} eps={eps} {meth}"] = c["max_abs_diff"]
            for r in e.get("milp", []):
                if "DISAGREE" in r["agreement"]:
                    summary["milp_disagreements"].append({"model": m["model"], "eps": eps, "image": r["image"],
                                                          "advrob": r["advrob"]["status"],
                                                          "milp": r["milp_decision"]})
    doc["summary"] = summary
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    log(f"wrote {out}; disagreements: {summary['milp_disagreements'] or 'none'}")


if __name__ == "__main__":
    main()
