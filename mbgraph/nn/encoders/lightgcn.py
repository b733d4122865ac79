r"""LightGCN propagation (He et al., SIGIR 2020), the single-graph encoder of mbgraph.

.. math::
    \mathbf{E}^{(l+1)} = \hat{\mathbf{A}}\,\mathbf{E}^{(l)}, \qquad
    \mathbf{E} = \sum_{l=0}^{L} \alpha_l \mathbf{E}^{(l)}, \quad \alpha_l = \tfrac{1}{L+1}

with :math:`\hat{\mathbf{A}} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` over the stacked
user+item nodes. Used on the target behavior alone (LightGCN) or on the union of all behaviors
(LightGCN_M of COPF table 6).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..functional import COMBINES, propagate


class LightGCNEncoder(nn.Module):
    """Parameter-free LightGCN propagation over one cached operator.

    Args:
        num_layers: propagation layers :math:`L`.
        combine: ``'mean'`` (LightGCN's :math:`\\alpha_l = 1/(L+1)`), ``'sum'`` (COPF eq 7)
            or ``'last'``.

    Shapes:
        - **input:** node embeddings ``[U + I, d]`` (users first) and a
          :class:`~mbgraph.data.adjacency.SparseOperator` ``[U + I, U + I]``.
        - **output:** ``[U + I, d]``.
    """

    def __init__(self, num_layers: int = 3, combine: str = 'mean'):
        super().__init__()
        if num_layers < 0:
            raise ValueError(f'num_layers must be >= 0, got {num_layers}')
        if combine not in COMBINES:
            raise ValueError(f"combine must be 'mean', 'sum' or 'last', got {combine!r}")
        self.num_layers = num_layers
        self.combine = combine

    def forward(self, x: Tensor, op) -> Tensor:
        # running: this encoder has always summed its layers left to right
        return propagate(x, op, self.num_layers, combine=self.combine, running=True)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(num_layers={self.num_layers}, combine={self.combine!r})'
