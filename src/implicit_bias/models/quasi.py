"""Small quasi-homogeneous models whose parameter groups have different rates (Kunin et al. 2023, §5)."""

from __future__ import annotations

import torch
from torch import nn

from ..validation import check_scalar


class SplitLinear(nn.Module):
    """Φ(x) = ⟨u ⊙ v, x_A⟩ + ⟨w, x_B⟩ with x = (x_A, x_B), x_A the first ``dim_a`` coordinates.

    Linear in x with effective coefficients β = (u ⊙ v, w); quasi-homogeneous with rates ½ on u, v (a depth-2
    diagonal linear network) and 1 on w (Kunin et al. 2023, §5.1). Starts at u = ``init_scale``·1, v = 0, w = 0
    (β = 0; u_i² − v_i² = init_scale² is conserved by gradient flow, so β_A can take either sign).
    """

    def __init__(self, dim_a: int, dim_b: int, *, init_scale: float = 0.1) -> None:
        super().__init__()
        check_scalar("dim_a", dim_a, int, low=1)
        check_scalar("dim_b", dim_b, int, low=1)
        self.dim_a = dim_a
        self.u = nn.Parameter(torch.full((dim_a,), float(init_scale)))
        self.v = nn.Parameter(torch.zeros(dim_a))
        self.w = nn.Parameter(torch.zeros(dim_b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.u * self.v * x[:, : self.dim_a]).sum(1, keepdim=True) + x[:, self.dim_a :] @ self.w.unsqueeze(1)

    def coefficients(self) -> torch.Tensor:
        """β = (u ⊙ v, w), the effective linear predictor, detached."""
        return torch.cat([self.u * self.v, self.w]).detach()


class WithOutputBias(nn.Module):
    """Φ(x) = body(x) + b: a scalar output bias added to a network. With a bias-free L-homogeneous body the body
    has rates 1/L and b rate 1 (Kunin et al. 2023, §5.2: the bias is the highest-rate parameter)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.bias = nn.Parameter(torch.zeros(1))
        self.feature_names = getattr(body, "feature_names", ())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.bias
