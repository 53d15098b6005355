"""Writes the ONNX fixtures advrob-onnx's tests check against: small image classifiers exported by
`torch.onnx.export` at its default settings, each with PyTorch's own logits and input gradients for
a fixed batch.

    python examples/pytorch/make_onnx_fixtures.py [OUT_DIR]   # default: examples/pytorch/onnx

For each model NAME it writes NAME.onnx (the default exporter), NAME_legacy.onnx (the TorchScript
exporter, `dynamo=False`), for some NAME_opset11.onnx (the TorchScript exporter at opset 11, the
operator forms of older files) and NAME.safetensors with
  x       the input batch [4, C, H, W] in [0, 1] (seeded)
  y       the labels [4] (int64)
  output  the graph's output (probabilities for a model that ends in Softmax)
  logits  the logits: the graph's output, or the input of its final Softmax
  grad    d/dx of sum_b CE(logits_b, y_b): the gradient an attack follows

The weights are PyTorch's random initialisation (BatchNorm's running statistics drawn too), so the
files stay small; the architectures are the point. The ResNets are the CIFAR PreAct ResNet-18 and
a WideResNet (RobustBench's families) at a small width: the same graph, fewer channels.
"""

import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class MlpSoftmax(nn.Module):
    """784-32-10 with a final Softmax: what a Keras-style model exports."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.fc2 = nn.Linear(32, 10)

    def logits(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    def forward(self, x):
        return F.softmax(self.logits(x), dim=1)


class LeNet(nn.Module):
    """LeNet-5 with tanh and sigmoid, flattened by x.view(x.size(0), -1) (Shape/Gather/Reshape)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = torch.sigmoid(self.fc1(x))
        return self.fc3(F.softplus(self.fc2(x)))


class CnnBn(nn.Module):
    """3x3 convolutions with BatchNorm, standardisation inside the graph (Sub/Div), a strided and a
    dilated convolution, average pooling, a 200-unit hidden layer, LeakyReLU and ELU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=2)
        self.fc1 = nn.Linear(16 * 7 * 7, 200)
        self.fc2 = nn.Linear(200, 10)

    def forward(self, x):
        x = (x - 0.1307) / 0.3081
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.1)
        x = F.avg_pool2d(F.relu(self.conv3(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.elu(self.fc1(x)))


class ResBlocks(nn.Module):
    """Residual blocks with identity and 1x1 shortcuts, asymmetric padding (F.pad), clamp, concat,
    global average pooling, a transpose and a LogSoftmax at the end."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.a1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.a2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b1 = nn.Conv2d(8, 16, 3, stride=2, padding=0, bias=False)
        self.b2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.short = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = x + self.a2(F.relu(self.a1(x)))
        y = self.b1(F.pad(x, (0, 1, 0, 1)))  # right and bottom only, as TF's "same"
        x = self.b2(F.relu(y)) + self.short(x)
        x = torch.clamp(x, -3.0, 3.0)
        x = torch.cat([x, -x], dim=1)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = x.unsqueeze(2).transpose(1, 2).squeeze(1)
        return F.log_softmax(self.fc(x), dim=1)


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """The CIFAR PreAct ResNet-18 of RobustBench's models (Wong et al., Rice et al.), base width
    `width` instead of 64, with CIFAR-10's standardisation inside the graph."""

    def __init__(self, width=4, num_classes=10):
        super().__init__()
        self.in_planes = width
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(width, 2, 1)
        self.layer2 = self._make_layer(2 * width, 2, 2)
        self.layer3 = self._make_layer(4 * width, 2, 2)
        self.layer4 = self._make_layer(8 * width, 2, 2)
        self.bn = nn.BatchNorm2d(8 * width)
        self.linear = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1((x - self.mean) / self.std)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


class WideBasic(nn.Module):
    """WideResNet's block (Zagoruyko & Komodakis), as in RobustBench's WideResNet."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal = in_planes == out_planes
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return y + (x if self.equal else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-10 at widths 4/8/16 (RobustBench's WRN-28-10 is the same graph, deeper and wider)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.block1 = WideBasic(4, 4, 1)
        self.block2 = WideBasic(4, 8, 2)
        self.block3 = WideBasic(8, 16, 2)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).view(-1, 16)
        return self.fc(out)


def randomise_batchnorm(model, gen):
    """Running statistics and affine parameters drawn at random, so that BatchNorm does something."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


MODELS = {
    "mlp_softmax": (MlpSoftmax, (1, 28, 28)),
    "lenet": (LeNet, (1, 28, 28)),
    "cnn_bn": (CnnBn, (1, 28, 28)),
    "resblocks": (ResBlocks, (1, 28, 28)),
    "preact_resnet18": (PreActResNet18, (3, 32, 32)),
    "wide_resnet": (WideResNet, (3, 32, 32)),
}


# the models also exported at opset 11 (the large CNN left out to keep the files small)
OPSET_11 = ("mlp_softmax", "lenet", "resblocks", "wide_resnet")


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, (cls, shape)) in enumerate(MODELS.items()):
        torch.manual_seed(1000 + i)
        gen = torch.Generator().manual_seed(2000 + i)
        model = cls()
        randomise_batchnorm(model, gen)
        model.eval()
        x = torch.rand((4, *shape), generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        onnx_path = out / f"{name}.onnx"
        # the default exporter and opset of this PyTorch; the batch dimension left free
        torch.onnx.export(
            model,
            (x,),
            str(onnx_path),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            external_data=False,
        )
        # and the TorchScript exporter (`dynamo=False`), whose graphs keep Flatten, BatchNormalization,
        # Pad, GlobalAveragePool and the Shape/Gather/Concat chains of `x.view(x.size(0), -1)`
        torch.onnx.export(
            model,
            (x,),
            str(out / f"{name}_legacy.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
        if name in OPSET_11:
            # the operator forms of older files (opset 11: axes and Clip bounds as attributes or
            # inputs as that opset has them, Softmax's 2-D coercion)
            torch.onnx.export(
                model,
                (x,),
                str(out / f"{name}_opset11.onnx"),
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                dynamo=False,
                opset_version=11,
            )
        xg = x.clone().requires_grad_(True)
        output = model(xg)
        logits = model.logits(xg) if hasattr(model, "logits") else output
        F.cross_entropy(logits, y, reduction="sum").backward()
        save_file(
            {
                "x": x.contiguous(),
                "y": y.contiguous(),
                "output": output.detach().clone().contiguous(),
                "logits": logits.detach().clone().contiguous(),
                "grad": xg.grad.contiguous(),
            },
            str(out / f"{name}.safetensors"),
        )
        print(f"{name}: {onnx_path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
