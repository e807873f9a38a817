"""Layers and losses with hand-written backward passes (PyTorch's names and layouts).

>>> import numpy as np
>>> from kfac_ref import nn
>>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), seed=0)
>>> model(np.zeros((5, 4))).shape
(5, 2)
"""

from .activations import ReLU, Sigmoid, Tanh
from .conv import Conv2d
from .linear import Linear
from .losses import CrossEntropyLoss, Loss, SigmoidCrossEntropyLoss, SquaredErrorLoss
from .module import Layer, ParamLayer
from .pooling import AvgPool2d, MaxPool2d
from .sequential import Sequential
from .shape import Flatten

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Flatten",
    "Layer",
    "Linear",
    "Loss",
    "MaxPool2d",
    "ParamLayer",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SigmoidCrossEntropyLoss",
    "SquaredErrorLoss",
    "Tanh",
]
