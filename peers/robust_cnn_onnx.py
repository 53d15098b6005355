"""PyTorch peer for advrob's ONNX / AutoAttack comparison: a small PGD-adversarially-trained MNIST CNN,
exported to ONNX, and evaluated with the original AutoAttack (fra31/auto-attack).

Model (input [N,1,28,28], pixels in [0,1], no normalisation; output logits [N,10]):
    conv(1->16, 3x3, pad 1) ReLU, conv(16->32, 3x3, stride 2, pad 1) ReLU,
    conv(32->32, 3x3, stride 2, pad 1) ReLU, flatten (32*7*7=1568), Linear(1568->100) ReLU, Linear(100->10)

usage:
    python robust_cnn_onnx.py train --mnist DIR --out OUTDIR [--epochs 3] [--eps 0.3]
        PGD adversarial training (Madry et al.) on the 60k training images: torch.manual_seed(0),
        2 torch threads, Adam lr 1e-3, batch 100, PGD with uniform random start, 10 steps of size
        2.5*eps/10, L-inf eps ramped linearly from 0 to eps over the first epoch (eps*(k+1)/600 at
        batch k of epoch 1), then fixed. Afterwards prints clean accuracy on all 10k test images and
        PGD-20 robust accuracy (random start, step 2.5*eps/20) at eps on the first 1000 test images.
        Writes OUTDIR/model.pt (state_dict), OUTDIR/model.onnx (torch.onnx.export default exporter,
        free batch dimension, weights inside the file; checked with onnx.checker) and OUTDIR/train.json.

    python robust_cnn_onnx.py autoattack --model OUTDIR/model.pt --mnist DIR --autoattack-src SRC \\
            [--n 1000] [--eps 0.3] --out FILE.json
        Runs the original AutoAttack, unchanged standard version (apgd-ce, apgd-t, fab-t, square):
        AutoAttack(model, norm='Linf', eps=eps, version='standard', device='cpu', seed=0)
        .run_standard_evaluation(x, y, bs=250, return_labels=True) on the FIRST n MNIST test images.
        SRC is the directory containing the `autoattack` package (e.g. /work/scratch/auto-attack).
        Writes JSON: eps, n, clean ('0'/'1' per image), robust ('0'/'1' per image), stages
        ([name, robust_accuracy] after each attack, parsed from AutoAttack's verbose log), clean_accuracy,
        robust_accuracy, seconds, torch, autoattack_commit (plus checks on x_adv and the captured log).

MNIST_DIR holds the gzipped IDX files (train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, ...).
"""
import argparse
import gzip
import io
import json
import os
import re
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

AUTOATTACK_COMMIT = "a39220048b3c9f2cca9a4d3a54604793c68eca7e"


def read_idx(path):
    d = gzip.open(path, "rb").read()
    nd = struct.unpack(">I", d[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * nd, d[4:4 + 4 * nd])
    return np.frombuffer(d[4 + 4 * nd:], np.uint8).reshape(dims)


def load_mnist(mnist_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = torch.tensor(read_idx(os.path.join(mnist_dir, f"{prefix}-images-idx3-ubyte.gz")),
                     dtype=torch.float32).unsqueeze(1) / 255.0
    y = torch.tensor(read_idx(os.path.join(mnist_dir, f"{prefix}-labels-idx1-ubyte.gz")), dtype=torch.long)
    return x, y


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def pgd_linf(model, x, y, eps, steps, step_size, random_start=True):
    """L-inf PGD on cross-entropy, projected onto the eps-ball and [0,1]."""
    if eps <= 0:
        return x.detach()
    if random_start:
        xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    else:
        xa = x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + step_size * g.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa.detach()


@torch.no_grad()
def accuracy(model, x, y, bs=1000):
    correct = 0
    for s in range(0, len(y), bs):
        correct += (model(x[s:s + bs]).argmax(1) == y[s:s + bs]).sum().item()
    return correct / len(y)


def cmd_train(a):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    xtr, ytr = load_mnist(a.mnist, "train")
    xte, yte = load_mnist(a.mnist, "test")
    n, bs = len(ytr), 100
    batches_per_epoch = n // bs
    steps, step_frac = 10, 2.5 / 10
    model = SmallCnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t_start = time.perf_counter()
    epoch_seconds = []
    it = 0
    for ep in range(a.epochs):
        t_ep = time.perf_counter()
        model.train()
        perm = torch.randperm(n)
        tot_loss, tot_correct = 0.0, 0
        for k in range(batches_per_epoch):
            idx = perm[k * bs:(k + 1) * bs]
            xb, yb = xtr[idx], ytr[idx]
            eps_t = a.eps * min(1.0, (it + 1) / batches_per_epoch)
            xadv = pgd_linf(model, xb, yb, eps_t, steps, step_frac * eps_t)
            out = model(xadv)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot_loss += loss.item() * len(yb)
            tot_correct += (out.argmax(1) == yb).sum().item()
            it += 1
            if (k + 1) % 100 == 0:
                print(f"epoch {ep + 1} batch {k + 1}/{batches_per_epoch} eps {eps_t:.4f} "
                      f"adv loss {tot_loss / ((k + 1) * bs):.4f} adv acc {tot_correct / ((k + 1) * bs):.4f} "
                      f"({time.perf_counter() - t_ep:.0f} s)", flush=True)
        epoch_seconds.append(time.perf_counter() - t_ep)
        print(f"epoch {ep + 1} done in {epoch_seconds[-1]:.1f} s", flush=True)
    train_seconds = time.perf_counter() - t_start

    model.eval()
    clean_acc = accuracy(model, xte, yte)
    t_pgd = time.perf_counter()
    torch.manual_seed(1)
    x1k, y1k = xte[:1000], yte[:1000]
    pgd_steps = 20
    pgd_step = 2.5 * a.eps / pgd_steps
    xadv = torch.cat([pgd_linf(model, x1k[s:s + 250], y1k[s:s + 250], a.eps, pgd_steps, pgd_step)
                      for s in range(0, 1000, 250)])
    assert (xadv - x1k).abs().max().item() <= a.eps + 1e-6 and xadv.min() >= 0 and xadv.max() <= 1
    pgd_acc = accuracy(model, xadv, y1k)
    pgd_seconds = time.perf_counter() - t_pgd
    print(f"clean test accuracy (10000): {clean_acc:.4f}")
    print(f"PGD-{pgd_steps} robust accuracy (first 1000, eps {a.eps}): {pgd_acc:.4f}")

    pt_path = os.path.join(a.out, "model.pt")
    torch.save(model.state_dict(), pt_path)

    onnx_path = os.path.join(a.out, "model.onnx")
    x = torch.rand(4, 1, 28, 28)
    t_onnx = time.perf_counter()
    torch.onnx.export(model.eval(), (x,), onnx_path, input_names=["input"], output_names=["output"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False)
    onnx_seconds = time.perf_counter() - t_onnx
    import onnx
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m, full_check=True)
    op_types = sorted({node.op_type for node in m.graph.node})
    op_counts = {}
    for node in m.graph.node:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    ext = [t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert not ext, f"external data in {ext}"
    in_shape = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    out_shape = [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    print(f"ONNX file {onnx_path} valid; opset {[(o.domain, o.version) for o in m.opset_import]}; "
          f"input {in_shape} output {out_shape}; op types: {op_types}; counts: {op_counts}")
    onnx_check = None
    try:  # optional numerical check against onnxruntime if present
        import onnxruntime as ort
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        xt = xte[:7].numpy()
        o = sess.run(None, {"input": xt})[0]
        onnx_check = float(np.abs(o - model(xte[:7]).detach().numpy()).max())
        print(f"onnxruntime max |diff| vs torch on 7 images: {onnx_check:.3g}")
    except ImportError:
        pass

    info = {
        "model": "conv(1->16,3x3,p1) relu conv(16->32,3x3,s2,p1) relu conv(32->32,3x3,s2,p1) relu "
                 "flatten(1568) fc(1568->100) relu fc(100->10)",
        "seed": 0, "threads": torch.get_num_threads(), "optimizer": "Adam", "lr": 1e-3, "batch": bs,
        "epochs": a.epochs, "train_examples": n, "eps": a.eps,
        "eps_schedule": "eps*min(1,(k+1)/600) at global batch k (linear 0->eps over epoch 1), then fixed",
        "pgd_train": {"steps": steps, "step_size": f"2.5*eps_t/{steps}", "random_start": "uniform[-eps,eps]",
                      "loss": "cross-entropy on adversarial examples only"},
        "train_seconds": round(train_seconds, 2), "epoch_seconds": [round(s, 2) for s in epoch_seconds],
        "clean_test_accuracy": clean_acc, "clean_test_n": len(yte),
        "pgd_eval": {"steps": pgd_steps, "step_size": pgd_step, "random_start": True, "eps": a.eps,
                     "n": 1000, "seed": 1, "robust_accuracy": pgd_acc, "seconds": round(pgd_seconds, 2)},
        "onnx": {"path": onnx_path, "op_types": op_types, "op_counts": op_counts,
                 "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
                 "input_shape": in_shape, "output_shape": out_shape,
                 "export_seconds": round(onnx_seconds, 2), "bytes": os.path.getsize(onnx_path),
                 "onnxruntime_max_abs_diff": onnx_check},
        "torch": torch.__version__, "onnx_version": onnx.__version__,
    }
    with open(os.path.join(a.out, "train.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(f"wrote {pt_path}, {onnx_path}, {os.path.join(a.out, 'train.json')}")


class Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.buf = stream, io.StringIO()

    def write(self, s):
        self.stream.write(s)
        self.stream.flush()
        self.buf.write(s)
        return len(s)

    def flush(self):
        self.stream.flush()


def cmd_autoattack(a):
    torch.set_num_threads(2)
    src = os.path.abspath(a.autoattack_src)
    sys.path.insert(0, src)
    import autoattack
    from autoattack import AutoAttack
    mod_file = os.path.abspath(autoattack.__file__)
    assert mod_file.startswith(src + os.sep), f"autoattack imported from {mod_file}, not {src}"
    print(f"autoattack from {mod_file}", flush=True)

    model = SmallCnn()
    model.load_state_dict(torch.load(a.model, map_location="cpu"))
    model.eval()
    xte, yte = load_mnist(a.mnist, "test")
    x, y = xte[:a.n].contiguous(), yte[:a.n].contiguous()
    with torch.no_grad():
        clean = model(x).argmax(1) == y

    tee = Tee(sys.stdout)
    old = sys.stdout
    sys.stdout = tee
    t0 = time.perf_counter()
    try:
        adversary = AutoAttack(model, norm='Linf', eps=a.eps, version='standard', device='cpu', seed=0)
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, bs=250, return_labels=True)
    finally:
        sys.stdout = old
    seconds = time.perf_counter() - t0
    log = tee.buf.getvalue()

    linf = (x_adv - x).abs().reshape(len(y), -1).max(1)[0].max().item()
    assert linf <= a.eps + 1e-6, f"x_adv outside eps ball: {linf}"
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1, "x_adv outside [0,1]"
    robust = clean & (y_adv == y)
    with torch.no_grad():
        recheck = model(x_adv).argmax(1)
    recheck_robust = clean & (recheck == y)
    stages = [[m.group(1).lower(), float(m.group(2)) / 100]
              for m in re.finditer(r"robust accuracy after ([A-Z\-]+): ([0-9.]+)%", log)]
    res = {
        "eps": a.eps, "n": a.n,
        "clean": "".join("1" if c else "0" for c in clean.tolist()),
        "robust": "".join("1" if r else "0" for r in robust.tolist()),
        "stages": stages,
        "clean_accuracy": clean.float().mean().item(),
        "robust_accuracy": robust.float().mean().item(),
        "seconds": round(seconds, 2),
        "torch": torch.__version__,
        "autoattack_commit": AUTOATTACK_COMMIT,
        "autoattack_module": mod_file,
        "settings": "AutoAttack(model, norm='Linf', eps=eps, version='standard', device='cpu', seed=0)"
                    ".run_standard_evaluation(x, y, bs=250, return_labels=True)",
        "attacks": list(adversary.attacks_to_run),
        "x_adv_max_linf": linf, "x_adv_min": x_adv.min().item(), "x_adv_max": x_adv.max().item(),
        "recheck_robust_matches": bool((recheck_robust == robust).all().item()),
        "threads": torch.get_num_threads(),
        "log": log,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"clean {res['clean_accuracy']:.4f} robust {res['robust_accuracy']:.4f} stages {stages} "
          f"in {seconds:.1f} s; recheck matches: {res['recheck_robust_matches']}; wrote {a.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="PGD adversarial training + ONNX export")
    t.add_argument("--mnist", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--eps", type=float, default=0.3)
    t.set_defaults(fn=cmd_train)
    q = sub.add_parser("autoattack", help="original AutoAttack (standard, Linf) on the first n test images")
    q.add_argument("--model", required=True)
    q.add_argument("--mnist", required=True)
    q.add_argument("--autoattack-src", required=True)
    q.add_argument("--n", type=int, default=1000)
    q.add_argument("--eps", type=float, default=0.3)
    q.add_argument("--out", required=True)
    q.set_defaults(fn=cmd_autoattack)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
