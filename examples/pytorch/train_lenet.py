#!/usr/bin/env python3
"""Train the LeNet of archs.py on MNIST for one epoch (Adam 1e-3, batch 128) and save its
state_dict with safetensors, for loading into advrob (the PyTorch -> advrob round trip), and with
--onnx the model as an ONNX file too (what `bench-runner evaluate --onnx` reads).

    python examples/pytorch/train_lenet.py lenet_mnist.safetensors [--onnx lenet.onnx] [--mnist DIR] [--epochs 1]

The output is not committed; see README.md in this folder.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import archs  # noqa: E402
import mnist_idx  # noqa: E402


def train(model, images, labels, *, epochs=1, batch=128, lr=1e-3, seed=0, log=True):
    """Adam on cross-entropy. A model whose forward returns log-probabilities (fgsm-tutorial) gets
    nll_loss, which is the same cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    log_probs = isinstance(model, archs.FgsmTutorialNet)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(x_all.shape[0], generator=gen)
        total, n = 0.0, 0
        for start in range(0, x_all.shape[0], batch):
            idx = perm[start : start + batch]
            x, y = x_all[idx].unsqueeze(1), y_all[idx]
            out = model(x)
            loss = F.nll_loss(out, y) if log_probs else F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        if log:
            print(f"  epoch {epoch + 1}/{epochs}: mean training loss {total / n:.4f}", flush=True)
    model.eval()
    return model


@torch.no_grad()
def accuracy(model, images, labels, batch=1000):
    model.eval()
    correct = 0
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).unsqueeze(1)
        correct += (model(x).argmax(1).numpy() == labels[start : start + batch]).sum()
    return correct / len(images)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="where to write the .safetensors file")
    ap.add_argument("--mnist", default=mnist_idx.default_dir(), help="MNIST IDX directory (.gz or not)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--onnx", default=None, help="also export the model as this ONNX file")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    tr_x, tr_y = mnist_idx.load(args.mnist, "train")
    te_x, te_y = mnist_idx.load(args.mnist, "test")
    model = archs.build("lenet")
    t0 = time.time()
    train(model, tr_x, tr_y, epochs=args.epochs, seed=args.seed)
    print(f"trained in {time.time() - t0:.1f}s; test accuracy {accuracy(model, te_x, te_y):.4f}")
    save_file(model.state_dict(), args.out)
    print(f"wrote {args.out}:")
    for k, v in model.state_dict().items():
        print(f"  {k:14s} {list(v.shape)}")
    if args.onnx:
        # the way to export any classifier: images [N, 1, 28, 28] in [0, 1] in, the batch free,
        # the weights inside the file
        torch.onnx.export(
            model.eval(),
            (torch.rand(2, 1, 28, 28),),
            args.onnx,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
        )
        print(f"wrote {args.onnx}")


if __name__ == "__main__":
    main()
