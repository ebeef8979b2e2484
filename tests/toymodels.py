"""Tiny models whose loss surface the tests compute independently, in float64 NumPy."""

import os
import time

import torch
from torch import nn


class Softmax(nn.Module):
    """Multinomial logistic regression on the flattened image: logits = x W^T + b."""

    def __init__(self, num_classes: int = 10, features: int = 3 * 32 * 32) -> None:
        super().__init__()
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def softmax(num_classes: int = 10) -> nn.Module:
    return Softmax(num_classes)


class TinyTanh(nn.Module):
    """The image averaged to 2x2 pixels, 3 tanh units, then the classes: 79 parameters for 10 classes, an
    indefinite Hessian small enough to write out densely."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(12, 3)
        self.out = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.pool(x).flatten(1))))


def tiny_tanh(num_classes: int = 10) -> nn.Module:
    return TinyTanh(num_classes)


class ConvBN(nn.Module):
    """conv → BatchNorm2d → ReLU → mean over pixels → classes. One BatchNorm, fed by the convolution alone: its
    statistics over a set of images do not depend on how the images are split into batches."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class LinearBN(nn.Module):
    """The image averaged to 2x2 pixels → linear → BatchNorm1d → ReLU → classes. One BatchNorm that sees one value
    per image and channel, so that train mode refuses a batch of one image."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(12, 5)
        self.bn = nn.BatchNorm1d(5)
        self.out = nn.Linear(5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.hidden(self.pool(x).flatten(1)))))


class DropoutBN(nn.Module):
    """conv → Dropout(0.5) → BatchNorm2d → ReLU → mean over pixels → classes: dropout in train mode would make the
    BatchNorm's statistics random."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.drop(self.conv(x)))).mean((2, 3)))


def dropout_bn(num_classes: int = 10) -> nn.Module:
    return DropoutBN(num_classes)


class FailsOnRankOne(Softmax):
    """Softmax regression whose forward raises in the process of rank 1 (env RANK): a rank that fails mid-run.
    With env FAILED_FLAG (a path), rank 1 creates that file as it fails and the other ranks wait for it in their
    forward (up to a minute), so that rank 1 surely gets points to fail on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flag = os.environ.get("FAILED_FLAG")
        if os.environ.get("RANK") == "1":
            if flag:
                open(flag, "w").close()
            raise RuntimeError("simulated failure on rank 1")
        deadline = time.monotonic() + 60
        while flag and not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().forward(x)


def fails_on_rank_one(num_classes: int = 10) -> nn.Module:
    return FailsOnRankOne(num_classes)
