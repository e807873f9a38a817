"""Element-wise nonlinearities and their derivatives.

Each backward multiplies the incoming gradient (S, N, ...) by φ'(x), stored in
the cache with shape (N, ...), broadcasting over the seed axis S.

    ReLU     φ(x) = max(x, 0)        φ' = [x > 0]
    Tanh     φ(x) = tanh x           φ' = 1 − φ²
    Sigmoid  φ(x) = 1 / (1 + e^−x)   φ' = φ (1 − φ)
"""

from __future__ import annotations

from ..backend import get_xp
from .module import Layer


class ReLU(Layer):
    def forward(self, x):
        return get_xp(x).maximum(x, 0)

    def forward_cached(self, x):
        return self.forward(x), {"dphi": x > 0}  # φ' = [x > 0] : (N, ...) bool

    def backward(self, cache, grad_out):
        return grad_out * cache["dphi"]


class Tanh(Layer):
    def forward(self, x):
        return get_xp(x).tanh(x)

    def forward_cached(self, x):
        y = get_xp(x).tanh(x)
        return y, {"dphi": 1.0 - y * y}

    def backward(self, cache, grad_out):
        return grad_out * cache["dphi"]


class Sigmoid(Layer):
    def forward(self, x):
        xp = get_xp(x)
        # Split by sign so that exp never overflows.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def forward_cached(self, x):
        y = self.forward(x)
        return y, {"dphi": y * (1.0 - y)}

    def backward(self, cache, grad_out):
        return grad_out * cache["dphi"]
