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
