#!/usr/bin/env python3
"""An advrob checkpoint's weights in PyTorch's layout, for `bench-runner evaluate`.

    python peers/export_weights.py MODEL_DIR OUT_DIR

Writes OUT_DIR/weights.safetensors (linear weights [out, in], through advrob_layout.py) and prints
the arguments that evaluate the same deployed model: `--weights … --arch … [--hidden …]
[--quantize L] [--logit-scale S]` (the deployment from MODEL_DIR/deploy.json, as attack_compare.py
loads it). Used by ensemble_vs_autoattack.sh and vs_autoattack.sh.
"""

import json
import os
import sys

from safetensors.torch import save_file

import advrob_layout


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    m, info = advrob_layout.load(model_dir)
    weights = os.path.join(out, "weights.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, weights)
    deploy_path = os.path.join(model_dir, "deploy.json")
    deploy = json.load(open(deploy_path)) if os.path.exists(deploy_path) else {}
    args = ["--weights", weights, "--arch", info["config"].get("arch", "mlp")]
    hidden = info["config"].get("hidden", [])
    if hidden:
        args += ["--hidden", ",".join(map(str, hidden))]
    if deploy.get("quantize"):
        args += ["--quantize", str(deploy["quantize"])]
    if deploy.get("logit_scale", 1.0) != 1.0:
        args += ["--logit-scale", str(deploy["logit_scale"])]
    print(" ".join(args))


if __name__ == "__main__":
    main()
