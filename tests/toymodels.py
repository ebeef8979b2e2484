"""Tiny models whose loss surface the tests compute independently, in float64 NumPy."""

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
