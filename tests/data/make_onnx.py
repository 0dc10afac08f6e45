"""Regenerate the ONNX fixtures in tests/data/onnx/ with PyTorch's exporter (CI has no torch:
the files are committed). Run from the repository root: python tests/data/make_onnx.py

The networks are torchvision's designs at reduced width on 32x32 inputs (the structure is what
the import tests check): a VGG, a ResNet-18 (basic blocks [2, 2, 2, 2] with 1x1 projections),
GoogLeNet-style inception modules and a small DenseNet. Random BN statistics and biases, so
that a swapped or dropped array shows. Exported by the TorchScript exporter (dynamo=False: the
default one needs onnxscript) without constant folding, which would fold BN into the CONV
before it. Each network's parameter and MAC counts go to counts.json (MACs by forward hooks,
as torchvision counts them: every Conv2d's output elements x (C_in/groups)*kH*kW, every
Linear's in*out)."""
import json
import os
import warnings

import torch
from torch import nn

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onnx")


# ---- the networks ----------------------------------------------------------------------------
def vgg(widths=(8, 16, 32), classes=10):
    """VGG-style: [CONV 3x3 - RELU]x2 - POOL per stage (x3 in the last), FC 64 x2, dropout."""
    layers, c = [], 3
    for i, w in enumerate(widths):
        for _ in range(2 if i < len(widths) - 1 else 3):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 4 * 4, 64), nn.ReLU(True),
                         nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(64, classes), nn.Softmax(dim=1))


class Basic(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with BN, a 1x1/s projection + BN where the shape
    changes, ReLU after the sum."""

    def __init__(self, cin, c, s=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, s, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.down = None if s == 1 and cin == c else nn.Sequential(
            nn.Conv2d(cin, c, 1, s, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(w=8, classes=10):
    stages, cin = [], w
    for i, c in enumerate((w, 2 * w, 4 * w, 8 * w)):
        s = 1 if i == 0 else 2
        stages += [Basic(cin, c, s), Basic(c, c)]
        cin = c
    return nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
                         nn.MaxPool2d(3, 2, 1), *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(cin, classes))


def bc(cin, c, k=1, s=1):
    """GoogLeNet's BasicConv2d: a bias-free conv, BN (eps 0.001), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, c, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(c, eps=0.001), nn.ReLU(True))


class Inception(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, pp):
        super().__init__()
        self.b1 = bc(cin, c1)
        self.b2 = nn.Sequential(bc(cin, r3), bc(r3, c3, 3))
        self.b3 = nn.Sequential(bc(cin, r5), bc(r5, c5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), bc(cin, pp))
        self.out = c1 + c3 + c5 + pp

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def googlenet(classes=10):
    a = Inception(32, 8, 12, 16, 4, 8, 8)
    b = Inception(a.out, 16, 16, 24, 8, 12, 12)
    return nn.Sequential(bc(3, 16, 3), nn.MaxPool2d(3, 2, ceil_mode=True), bc(16, 32, 3),
                         nn.MaxPool2d(3, 2, ceil_mode=True), a, b,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(b.out, classes), nn.Softmax(dim=1))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth=4):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                               nn.Conv2d(cin, 4 * growth, 1, bias=False),
                               nn.BatchNorm2d(4 * growth), nn.ReLU(),
                               nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


def densenet(classes=10):
    layers, c = [nn.Conv2d(3, 8, 3, padding=1, bias=False)], 8
    for i in range(2):
        for _ in range(3):
            layers.append(DenseLayer(c))
            c += 4
        if i == 0:
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                       nn.AvgPool2d(2, 2)]
            c //= 2
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(c, classes))


class Ops(nn.Module):
    """The other operators netc imports, in one chain: the input normalization (Sub, Div),
    LeakyReLU (fused at 0.01, a layer at 0.2), ConvTranspose, PReLU, AvgPool counting its
    padding, nearest and bilinear Resize, a grouped Conv, InstanceNorm, ELU, Tanh, a 1x1/2 Conv
    that drops a row (round=floor), flatten by view (Shape/Gather/Concat/Reshape), Sigmoid.
    (PyTorch writes LocalResponseNorm as a dozen operators, not ONNX's LRN: the tests build
    that one by hand.)"""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).reshape(1, 3, 1, 1))
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.up = nn.ConvTranspose2d(8, 8, 4, 2, 1)
        self.prelu = nn.PReLU(8)
        self.pool = nn.AvgPool2d(3, 2, 1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.c3 = nn.Conv2d(8, 4, 1, stride=2)
        self.fc = nn.Linear(4 * 32 * 32, 6)

    def forward(self, x):
        x = nn.functional.leaky_relu(self.c1((x - self.mean) / self.std), 0.01)
        x = nn.functional.leaky_relu(self.prelu(self.up(x)), 0.2)
        x = nn.functional.interpolate(self.pool(x), scale_factor=2, mode="nearest")
        x = nn.functional.elu(self.inorm(self.c2(x)), 0.5)
        x = torch.tanh(self.c3(x))
        x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.fc(x.view(x.size(0), -1)))


NETWORKS = {"vgg": vgg, "resnet18": resnet18, "googlenet": googlenet, "densenet": densenet,
            "ops": Ops}


# ---- export ----------------------------------------------------------------------------------
def randomize(model, seed=0):
    """Random BN statistics and affine parameters and biases (fresh ones are 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and \
                    m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return model.eval()


def macs(model, shape):
    """Multiply-adds per sample as torchvision counts them."""
    total = [0]

    def hook(m, inputs, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
                m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):  # every input value times its kernel (fvcore)
            total[0] += inputs[0][0].numel() * (m.out_channels // m.groups) * \
                m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total[0]


def export(model, path, shape=(3, 32, 32)):
    """The model as ONNX (opset 17, a dynamic batch axis); its parameter and MAC counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *shape), path, dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs(model, shape)}


def main():
    os.makedirs(HERE, exist_ok=True)
    counts = {}
    for name, make in NETWORKS.items():
        torch.manual_seed(0)
        counts[name] = export(randomize(make()), os.path.join(HERE, f"{name}.onnx"))
        print(name, counts[name], os.path.getsize(os.path.join(HERE, f"{name}.onnx")), "bytes")
    with open(os.path.join(HERE, "counts.json"), "w") as f:
        json.dump(counts, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
