#!/usr/bin/env python3
"""Write the PyTorch-made fixtures that advrob-model's loader tests read (they run without PyTorch).

For each architecture in FIXTURE_ARCHS this writes, into the output directory:

  <arch>.safetensors  safetensors.torch.save_file(model.state_dict(), path)
  <arch>.json         {"arch", "torch", "inputs": 4 x 784 floats, "logits": 4 x 10 floats, ...}

`inputs` are four deterministic 28x28 images in [0, 1], flattened row-major:
    image k, pixel (i, j) = ((i*37 + j*11 + k*5) % 97) / 96
(stored as the float32 values PyTorch saw, written exactly). `logits` are model(inputs) in eval
mode, float32, written exactly; for fgsm-tutorial they are its log_softmax output (see "output").

The weights come from torch.manual_seed(0), PyTorch's default init and then one epoch of Adam (1e-3,
batch 128) on the MNIST training set, so that the logits are not tiny; --no-train keeps the raw
init. Usage (from the repository root):

    python examples/pytorch/make_fixtures.py [--mnist DIR] [--out crates/advrob-model/tests/fixtures]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import archs  # noqa: E402
import mnist_idx  # noqa: E402
from train_lenet import accuracy, train  # noqa: E402

FIXTURE_ARCHS = ["lenet", "fgsm-tutorial", "mlp"]  # not madry-cnn: 13 MB of weights
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "..", "crates", "advrob-model", "tests", "fixtures"))


def fixture_inputs() -> torch.Tensor:
    """[4, 1, 28, 28] float32: image k, pixel (i, j) = ((i*37 + j*11 + k*5) % 97) / 96."""
    imgs = [[[((i * 37 + j * 11 + k * 5) % 97) / 96 for j in range(28)] for i in range(28)] for k in range(4)]
    return torch.tensor(imgs, dtype=torch.float32).unsqueeze(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--mnist", default=mnist_idx.default_dir())
    ap.add_argument("--no-train", action="store_true", help="keep PyTorch's default init (no MNIST needed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", action="append", help="only these (repeatable); default: " + ", ".join(FIXTURE_ARCHS))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    if not args.no_train:
        tr_x, tr_y = mnist_idx.load(args.mnist, "train")
        te_x, te_y = mnist_idx.load(args.mnist, "test")
    x = fixture_inputs()
    for arch in args.arch or FIXTURE_ARCHS:
        t0 = time.time()
        torch.manual_seed(0)
        np.random.seed(0)
        model = archs.build(arch)
        info = {"init": "torch default, torch.manual_seed(0)"}
        if not args.no_train:
            print(f"{arch}: training 1 epoch", flush=True)
            train(model, tr_x, tr_y, epochs=1, batch=128, lr=1e-3, seed=0)
            acc = float(accuracy(model, te_x, te_y))
            info = {
                "init": "torch default, torch.manual_seed(0)",
                "training": "1 epoch MNIST train, Adam lr 1e-3, batch 128, shuffle seed 0",
                "mnist_test_accuracy": acc,
            }
        model.eval()
        with torch.no_grad():
            out = model(x)
        st_path = os.path.join(args.out, f"{arch}.safetensors")
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(sd, st_path)

        # The file alone must give back the same function.
        fresh = archs.build(arch)
        fresh.load_state_dict(load_file(st_path))
        fresh.eval()
        with torch.no_grad():
            again = fresh(x)
        assert torch.equal(out, again), f"{arch}: reloaded weights give different outputs"

        doc = {
            "arch": arch,
            "torch": torch.__version__,
            "inputs": [[float(v) for v in img.reshape(-1).tolist()] for img in x],
            "logits": [[float(v) for v in row] for row in out.tolist()],
            "output": archs.OUTPUTS[arch],
            "input_shape": [1, 28, 28],
            "tensors": {k: list(v.shape) for k, v in sd.items()},
            **info,
        }
        with open(os.path.join(args.out, f"{arch}.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        extra = f", MNIST test acc {info['mnist_test_accuracy']:.4f}" if "mnist_test_accuracy" in info else ""
        print(
            f"{arch}: wrote {st_path} ({os.path.getsize(st_path)} B) and {arch}.json; "
            f"output range [{out.min():.3f}, {out.max():.3f}], argmax {out.argmax(1).tolist()}"
            f"{extra}; {time.time() - t0:.1f}s",
            flush=True,
        )
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"fixtures total {total} B in {args.out}")


if __name__ == "__main__":
    main()
