"""PyTorch definitions of the architectures advrob can load from a PyTorch `state_dict`.

The attribute names (conv1, conv2, fc1, ...) are part of the contract: `save_file(model.state_dict())`
writes tensors named `<attr>.weight` / `<attr>.bias`, and the Rust loader maps those names onto its
own layers. Do not rename them.

Tensor layouts are PyTorch's: Conv2d weight [out, in, kH, kW], Linear weight [out, in], and every
flatten is NCHW row-major (C, then H, then W). Inputs are [N, 1, 28, 28] in [0, 1]; a [N, 28, 28]
or [N, 784] batch is reshaped to that first.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, 28, 28] view of a [N, 784], [N, 28, 28] or [N, 1, 28, 28] batch."""
    return x.reshape(-1, 1, 28, 28)


class LeNet(nn.Module):
    """LeNet-5 style: conv(1->6, 5, pad 2) relu pool2 -> conv(6->16, 5) relu pool2 -> 400 -> 120 -> 84 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = _as_image(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [N, 6, 14, 14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [N, 16, 5, 5]
        x = torch.flatten(x, 1)  # [N, 400], C,H,W order
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)  # logits


class FgsmTutorialNet(nn.Module):
    """The network of PyTorch's FGSM tutorial (its `Net`). Returns log-probabilities (log_softmax)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = _as_image(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # [N, 10, 12, 12]
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))  # [N, 20, 4, 4]
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class Mlp(nn.Module):
    """784 -> 128 (ReLU) -> 10, input flattened row-major."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.fc2(F.relu(self.fc1(x)))


class MadryCnn(nn.Module):
    """The MNIST CNN of Madry et al. (2018): conv(1->32, 5, pad 2) relu pool2 -> conv(32->64, 5, pad 2)
    relu pool2 -> 7*7*64 = 3136 -> 1024 (ReLU) -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.fc2 = nn.Linear(1024, 10)

    def forward(self, x):
        x = _as_image(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [N, 32, 14, 14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [N, 64, 7, 7]
        x = torch.flatten(x, 1)  # [N, 3136], C,H,W order
        x = F.relu(self.fc1(x))
        return self.fc2(x)


# Name used on the Rust side (and in fixture file names) -> class.
ARCHS = {
    "lenet": LeNet,
    "fgsm-tutorial": FgsmTutorialNet,
    "mlp": Mlp,
    "madry-cnn": MadryCnn,
}

# What each architecture's forward returns.
OUTPUTS = {
    "lenet": "logits",
    "fgsm-tutorial": "log_softmax",
    "mlp": "logits",
    "madry-cnn": "logits",
}


def build(arch: str) -> nn.Module:
    """A fresh (default-initialised) model of the named architecture."""
    try:
        return ARCHS[arch]()
    except KeyError:
        raise SystemExit(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}") from None
