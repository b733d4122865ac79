r"""CRGCN (Yan et al., "Cascading Residual Graph Convolutional Network for Multi-Behavior
Recommendation", TOIS 2023): cascading residual LightGCNs. No paper file is bundled; the
reading below is stated explicitly and every deviation is a named option.

Behavior :math:`k`'s LightGCN starts from the previous behavior's output and its output is the
residual sum of that input and the last propagation layer:

.. math::
    \mathbf{e}^{1,0} = \mathbf{E}^{(0)}, \quad \mathbf{e}^{k,0} = \mathbf{e}^{k-1,*}, \quad
    \mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k\,\mathbf{e}^{k,l}, \quad
    \mathbf{e}^{k,*} = \mathbf{e}^{k,0} + g(\mathbf{e}^{k,L_k}),

with :math:`g` the row-wise L2 normalisation (``normalize=True``, the default: the authors'
released code, which we take as the published method; see the scale note of
:mod:`mbgraph.nn.encoders.cascade`) or the identity (``normalize=False``, the bare equation).
CRGCN adds no parameter besides the embeddings; the authors' code
(``docs/reference_mbcgcn_crgcn.md``) propagates with PyG-style ``GCNConv`` layers whose bias
is learnable and zero at the start, :math:`\mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k
\mathbf{e}^{k,l} + \mathbf{b}^{k,l}` (``bias=True``; added to every node, users and items).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor

from .base import LayerSpec
from .cascade import CascadeEncoder


class CRGCNEncoder(CascadeEncoder):
    r"""CRGCN's cascade (module docstring for the update rule and the reading).

    Args:
        num_layers (int or sequence of int, optional): :math:`L_k`, one for every behavior or
            one per behavior (upstream -> target). (default: :obj:`2`)
        norm (str, optional): normalisation of :math:`\mathbf{A}_k` (see
            :meth:`~mbgraph.data.adjacency.BehaviorAdjacency.operator`).
            (default: :obj:`'symmetric'`)
        normalize (bool, optional): L2-normalise :math:`\mathbf{e}^{k,L_k}` before the residual
            sum (the authors' code). (default: :obj:`True`)
        aggregate_target (bool, optional): replace the target behavior's output by
            :math:`\sum_k \mathbf{e}^{k,*}` (MB-CGCN's prediction embedding; not CRGCN's).
            (default: :obj:`False`)
        embedding_dim (int, optional): :math:`d`, needed by ``bias``.
        num_behaviors (int, optional): :math:`K`, needed by ``bias`` when ``num_layers`` is a
            single ``int``.
        bias (bool, optional): a learnable bias :math:`\mathbf{b}^{k,l}` after every
            propagation layer, zero-initialised (CRGCN's code: ``GCNConv`` keeps its bias).
            (default: :obj:`False`)

    Shapes:
        - **input:** ego embeddings ``[U + I, d]`` (users first) or an ``x_dict``, and
          the graph: a :class:`~mbgraph.data.adjacency.BehaviorAdjacency`, a PyG
          ``HeteroData`` or an ``edge_index_dict``
          (:meth:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder.inputs`).
        - **output:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` with users
          ``[K, U, d]`` and items ``[K, I, d]`` (:math:`\mathbf{e}^{k,*}`).
    """

    mode = 'crgcn'

    def __init__(self, num_layers: LayerSpec = 2, norm: str = 'symmetric',
                 normalize: bool = True, aggregate_target: bool = False,
                 embedding_dim: Optional[int] = None, num_behaviors: Optional[int] = None,
                 bias: bool = False):
        super().__init__(num_layers, norm, aggregate_target, embedding_dim, num_behaviors)
        self.normalize = bool(normalize)
        self._init_bias(bias)
        self.reset_parameters()

    def behavior_output(self, k: int, layers: Sequence[Tensor], num_users: int,
                        last: bool) -> Tuple[Tensor, Optional[Tensor]]:
        top = F.normalize(layers[-1], dim=-1) if self.normalize else layers[-1]
        out = layers[0] + top
        return out, out

    def extra_repr(self) -> str:
        return self._repr_parts([f'normalize={self.normalize}'])
