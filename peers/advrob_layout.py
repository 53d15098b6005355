#!/usr/bin/env python3
"""Read and write advrob's checkpoint layout from PyTorch, and (as a script) train a small MLP in
PyTorch and export it in that layout, to test attack_compare.py without advrob.

An advrob checkpoint directory holds
  model.json         {"input": 784, "hidden": [128], "dropout": 0.2, "classes": 10, "seed": 42}
  model.safetensors  layers.{i}.weight [in, out] (transposed relative to torch's Linear.weight),
                     layers.{i}.bias [out], float32
  deploy.json        optional: {"quantize": null or L, "logit_scale": s}
and the network is Flatten(28*28, row-major) -> [Linear, ReLU]* -> Linear -> logits; the deployed
model rounds each pixel to round(x*(L-1))/(L-1) before the network (zero derivative) and
multiplies the logits by logit_scale after it.

    python peers/advrob_layout.py OUT_DIR [--hidden 128] [--epochs 1] [--quantize L] [--logit-scale S]
"""

import argparse
import hashlib
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pytorch"))
import mnist_idx  # noqa: E402  (the repository's one Python MNIST reader)


class AdvrobMlp(nn.Module):
    """advrob's Mlp in eval mode, with its deployment wrapper.

    quantize: None or L (>= 2). Faithful: the forward value is round(x*(L-1))/(L-1), the derivative
    with respect to x is exactly zero (`x*0 + q.detach()`, as advrob builds it; torch.round and
    burn's round both round half to even). With straight_through=True the derivative is 1 instead
    (BPDA: `x + (q - x).detach()`), for attacks that adapt to the rounding; the forward value is
    the same.
    """

    def __init__(self, widths, quantize=None, logit_scale=1.0, straight_through=False):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.quantize = quantize
        self.logit_scale = float(logit_scale)
        self.straight_through = straight_through

    def preprocess(self, x):
        if self.quantize is None:
            return x
        steps = float(self.quantize - 1)
        q = torch.round(x.detach() * steps) / steps
        if self.straight_through:
            return x + (q - x).detach()
        return x * 0.0 + q.detach()

    def forward(self, x):
        x = self.preprocess(x)
        h = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = F.relu(h)
        if self.logit_scale != 1.0:
            h = h * self.logit_scale
        return h


class AdvrobLenet(nn.Module):
    """advrob's LeNet (`arch: lenet`, crates/advrob-model/src/cnn.rs): conv 5x5 (6, padding 2) ->
    ReLU -> max-pool 2 -> conv 5x5 (16) -> ReLU -> max-pool 2 -> FC 120 -> ReLU -> FC 84 -> ReLU ->
    FC classes; with the same deployment wrapper as AdvrobMlp (quantisation, logit scale)."""

    def __init__(self, image=(28, 28), classes=10, quantize=None, logit_scale=1.0, straight_through=False):
        super().__init__()
        side = lambda s: ((s + 4 - 4) // 2 - 4) // 2  # noqa: E731  (conv1 keeps the size, conv2 does not)
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side(image[0]) * side(image[1]), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)
        self.quantize = quantize
        self.logit_scale = float(logit_scale)
        self.straight_through = straight_through

    preprocess = AdvrobMlp.preprocess

    def forward(self, x):
        x = self.preprocess(x)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        h = self.fc3(x)
        if self.logit_scale != 1.0:
            h = h * self.logit_scale
        return h


def _load_lenet(cfg, deploy, tensors, wpath, straight_through):
    """An AdvrobLenet with the checkpoint's tensors: convolutions [out, in, k, k] as PyTorch's, linear
    weights [in, out] (transposed relative to PyTorch's)."""
    model = AdvrobLenet(cfg.get("image", [28, 28]), cfg["classes"], deploy["quantize"], deploy["logit_scale"],
                        straight_through)
    expected = set()
    with torch.no_grad():
        for name, mod in model.named_children():
            _copy_layer(mod, name, tensors, wpath, expected)
    return model, expected


def _copy_layer(mod, name, tensors, wpath, expected):
    """Copy the checkpoint's `{name}.weight` and `{name}.bias` (a missing bias is zero) into `mod`,
    checking the shape, and add their names to `expected`: a Conv2d's weight is [out, in, k, k] as
    PyTorch's, a Linear's [in, out] (transposed relative to PyTorch's)."""
    conv = isinstance(mod, nn.Conv2d)
    want = list(mod.weight.shape) if conv else [mod.in_features, mod.out_features]
    w = tensors.get(f"{name}.weight")
    if w is None or list(w.shape) != want:
        raise ValueError(f"{wpath}: {name}.weight is {None if w is None else list(w.shape)}, expected "
                         f"{'[out, in, k, k]' if conv else '[in, out]'} = {want}")
    mod.weight.copy_(w.to(torch.float32) if conv else w.t().to(torch.float32))
    expected.add(f"{name}.weight")
    b = tensors.get(f"{name}.bias")
    if b is None:
        mod.bias.zero_()
    else:
        mod.bias.copy_(b.to(torch.float32))
        expected.add(f"{name}.bias")


def load_mnist(directory, split="test"):
    """(images float32 [N, 1, 28, 28] in [0, 1], labels int64 [N]) from IDX files, .gz or not,
    read by the examples' reader (examples/pytorch/mnist_idx.py)."""
    images, labels = mnist_idx.load(directory, split)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def load(dir_, straight_through=False):
    """(model in eval mode, info dict) from an advrob checkpoint directory."""
    with open(os.path.join(dir_, "model.json")) as f:
        cfg = json.load(f)
    deploy = {"quantize": None, "logit_scale": 1.0}
    dpath = os.path.join(dir_, "deploy.json")
    if os.path.exists(dpath):
        with open(dpath) as f:
            deploy.update(json.load(f))
    # Refuse what this loader does not implement rather than attack a different model.
    arch = cfg.get("arch", "mlp")
    if arch not in ("mlp", "lenet"):
        raise ValueError(f"{dir_}: model.json arch {arch!r}; only 'mlp' and 'lenet' are implemented here")
    unknown = {k: v for k, v in deploy.items() if k not in ("quantize", "logit_scale") and v is not None}
    if unknown:
        raise ValueError(f"{dir_}: deploy.json sets {unknown}, which this loader does not implement")
    wpath = os.path.join(dir_, "model.safetensors")
    tensors = load_file(wpath)
    if arch == "lenet":
        model, expected = _load_lenet(cfg, deploy, tensors, wpath, straight_through)
    else:
        model, expected = _load_mlp(cfg, deploy, tensors, wpath, straight_through)
    extra = set(tensors) - expected
    if extra:
        raise ValueError(f"{wpath}: unexpected tensors {sorted(extra)}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with open(wpath, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return model, {"config": cfg, "deploy": deploy, "weights_sha256": digest}


def _load_mlp(cfg, deploy, tensors, wpath, straight_through):
    """An AdvrobMlp with the checkpoint's tensors ([in, out] weights, transposed relative to PyTorch's)."""
    widths = [cfg["input"], *cfg["hidden"], cfg["classes"]]
    model = AdvrobMlp(widths, deploy["quantize"], deploy["logit_scale"], straight_through)
    expected = set()
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            _copy_layer(layer, f"layers.{i}", tensors, wpath, expected)
    return model, expected


def save(model, dir_, seed=42, dropout=0.2, write_deploy=None):
    """Write `model` (an AdvrobMlp) in advrob's layout. write_deploy: None (only when the model has a
    wrapper), True or False."""
    os.makedirs(dir_, exist_ok=True)
    widths = [model.layers[0].in_features] + [l.out_features for l in model.layers]
    cfg = {"input": widths[0], "hidden": widths[1:-1], "dropout": dropout, "classes": widths[-1], "seed": seed}
    with open(os.path.join(dir_, "model.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {}
    for i, layer in enumerate(model.layers):
        tensors[f"layers.{i}.weight"] = layer.weight.detach().t().contiguous().to(torch.float32)
        tensors[f"layers.{i}.bias"] = layer.bias.detach().contiguous().to(torch.float32)
    save_file(tensors, os.path.join(dir_, "model.safetensors"))
    wrapped = model.quantize is not None or model.logit_scale != 1.0
    if write_deploy or (write_deploy is None and wrapped):
        with open(os.path.join(dir_, "deploy.json"), "w") as f:
            json.dump({"quantize": model.quantize, "logit_scale": model.logit_scale}, f, indent=2)


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--mnist", default="../shared/data/mnist")
    ap.add_argument("--hidden", type=int, nargs="*", default=[128])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quantize", type=int, default=None)
    ap.add_argument("--logit-scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load_mnist(args.mnist, "train")
    xt, yt = load_mnist(args.mnist, "test")
    model = AdvrobMlp([784, *args.hidden, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), 128):
            idx = perm[s : s + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.quantize, model.logit_scale = args.quantize, args.logit_scale
    model.eval()
    save(model, args.out, seed=args.seed)
    again, _ = load(args.out)
    with torch.no_grad():
        acc = (again(xt).argmax(1) == yt).float().mean().item()
        assert torch.equal(again(xt[:64]), model(xt[:64])), "layout round trip changed the function"
    print(f"wrote {args.out}: test accuracy {acc:.4f} (deploy: quantize={args.quantize}, logit_scale={args.logit_scale})")


if __name__ == "__main__":
    main()
