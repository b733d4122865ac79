"""BehaviorConv: the parameter-free propagation layer of the multi-behavior encoders."""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, spmm, to_edge_index, to_torch_csr_tensor

from mbgraph.data.adjacency import NORMS, SparseOperator, normalize_edges


class BehaviorConv(MessagePassing):
    r"""The light (weight-free) graph convolution of the multi-behavior encoders, with the
    normalisations of the `"Parallel Knowledge Enhancement based Framework for Multi-behavior
    Recommendation" <https://doi.org/10.1145/3583780.3615004>`_ paper (PKEF, CIKM'23, eq 9),
    the "Combinatorial Optimization Perspective based Framework for Multi-behavior
    Recommendation" paper (COPF, KDD'25, eq 5) and `"LightGCN"
    <https://arxiv.org/abs/2002.02126>`_:

    .. math::
        \mathbf{X}^{\prime} = \hat{\mathbf{A}} \mathbf{X}
        \; \left( + \, \mathbf{X} \text{ if } \mathrm{add\_self} \right)

    where, with :math:`\mathbf{A}_{ij}` the weight of the edge :math:`j \to i` and
    :math:`\mathbf{D}_{ii} = \sum_j \mathbf{A}_{ij}`, :math:`\hat{\mathbf{A}}` is

    * ``'symmetric'``: :math:`\mathbf{D}^{-1/2} \mathbf{A} \mathbf{D}^{-1/2}` (LightGCN);
    * ``'left'``: :math:`\mathbf{D}^{-1} \mathbf{A}` (the PKEF / COPF authors' code);
    * ``'left_self_loop'``: :math:`\tilde{\mathbf{D}}^{-1} (\mathbf{A} + \mathbf{I})`,
      :math:`\tilde{\mathbf{D}}_{ii} = \sum_j (\mathbf{A} + \mathbf{I})_{ij}` (PKEF eq 9, which
      with ``add_self=True`` is the paper's layer
      :math:`\mathbf{z}^{k,l+1} = \hat{\mathbf{A}}_k \mathbf{z}^{k,l} + \mathbf{z}^{k,l}`);
    * ``'left_plus_identity'``: :math:`\mathbf{D}^{-1} \mathbf{A} + \mathbf{I}` (one term of
      COPF eq 5);
    * ``'none'``: :math:`\mathbf{A}`.

    A node without incoming edges gets :math:`\mathbf{D}^{-1}_{ii} = 0` (no ``inf``). The
    self loop of ``'left_self_loop'`` is added to every node, as in :math:`\mathbf{A} +
    \mathbf{I}` (an existing self loop is not replaced).

    The graph may be given as ``edge_index`` (``[2, E]``, row 0 the source :math:`j`, row 1 the
    target :math:`i`), as a :class:`torch_sparse.SparseTensor` or a torch sparse COO / CSR
    tensor in PyG's ``adj_t`` convention (``adj_t[i, j]`` for the message :math:`j \to i`), or
    as a :class:`mbgraph.data.adjacency.SparseOperator` whose normalisation is already applied
    (the cached fast path the models use: ``normalize`` is then ignored and the layer computes
    ``op @ x``). For the user-item multiplex graph pass the symmetric :math:`U + I` graph of
    :func:`mbgraph.data.adjacency.to_homogeneous_edge_index`.

    Args:
        normalize (str, optional): ``'symmetric'``, ``'left'``, ``'left_self_loop'``,
            ``'left_plus_identity'`` or ``'none'``. (default: :obj:`'left_self_loop'`)
        add_self (bool, optional): add the input to the propagated features (the ``+ z`` of
            PKEF eq 9). (default: :obj:`True`)
        cached (bool, optional): cache the normalised graph of the first call and reuse it
            (transductive learning only, like :class:`~torch_geometric.nn.conv.GCNConv`).
            (default: :obj:`False`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F)`,
          edge indices :math:`(2, |\mathcal{E}|)` or a sparse :math:`(|\mathcal{V}|,
          |\mathcal{V}|)` adjacency or operator,
          edge weights :math:`(|\mathcal{E}|)` *(optional, edge_index input only)*
        - **output:** node features :math:`(|\mathcal{V}|, F)`
    """
    _cached_edge_index: Optional[Tuple[Tensor, Tensor]]
    _cached_adj_t: Optional[Union[Tensor, SparseTensor]]

    def __init__(self, normalize: str = 'left_self_loop', add_self: bool = True,
                 cached: bool = False, **kwargs):
        kwargs.setdefault('aggr', 'add')
        super().__init__(**kwargs)
        if normalize not in NORMS:
            raise ValueError(f'unknown normalize {normalize!r}; expected one of {list(NORMS)}')
        self.normalize = normalize
        self.add_self = add_self
        self.cached = cached
        self._cached_edge_index = None
        self._cached_adj_t = None

    def reset_parameters(self):
        """No learnable parameters; clears the cached normalised graph."""
        super().reset_parameters()
        self._cached_edge_index = None
        self._cached_adj_t = None

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        if not isinstance(x, Tensor):
            # e.g. torch_geometric.nn.to_hetero, which passes (x_src, x_dst) on bipartite types
            raise TypeError(f'BehaviorConv takes one node feature matrix x [N, F] of a '
                            f'homogeneous graph, got {type(x).__name__}; flatten a HeteroData '
                            f'with data.to_homogeneous() or '
                            f'mbgraph.data.adjacency.to_homogeneous_edge_index (bipartite '
                            f'(x_src, x_dst) inputs, as torch_geometric.nn.to_hetero passes, '
                            f'are not supported)')
        if isinstance(edge_index, SparseOperator):
            if edge_weight is not None:
                raise ValueError('edge_weight cannot be combined with a SparseOperator, whose '
                                 'values are already the normalised weights')
            out = edge_index @ x
        else:
            num_nodes = x.size(self.node_dim)
            if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index):
                cache = self._cached_edge_index
                if cache is None:
                    edge_index, edge_weight = self._normalize(edge_index, edge_weight, num_nodes,
                                                              x.dtype)
                    if self.cached:
                        self._cached_edge_index = (edge_index, edge_weight)
                else:
                    edge_index, edge_weight = cache
            else:
                if edge_weight is not None:
                    raise ValueError('edge_weight is only used with an edge_index input; a '
                                     'sparse adjacency carries its weights as its values')
                cache = self._cached_adj_t
                if cache is None:
                    edge_index = self._normalize_adj_t(edge_index, num_nodes, x.dtype)
                    if self.cached:
                        self._cached_adj_t = edge_index
                else:
                    edge_index = cache
            # propagate_type: (x: Tensor, edge_weight: OptTensor)
            out = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        if self.add_self:
            out = out + x
        return out

    def _normalize(self, edge_index: Tensor, edge_weight: OptTensor, num_nodes: int,
                   dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """Edge weights of :math:`\\hat{A}` on ``edge_index`` (self loops appended if the norm
        has a diagonal): :func:`mbgraph.data.adjacency.normalize_edges`, the normalisation of
        the cached operators too."""
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.size(1), dtype=dtype, device=edge_index.device)
        # i: the node a message goes to (its row of A), j: the node it comes from
        forward = self.flow == 'source_to_target'
        i, j = (edge_index[1], edge_index[0]) if forward else (edge_index[0], edge_index[1])
        row, col, value, _ = normalize_edges(i, j, num_nodes, self.normalize, edge_weight)
        if row is i:  # no diagonal appended: the edges are the input's
            return edge_index, value
        return (torch.stack([col, row]) if forward else torch.stack([row, col])), value

    def _normalize_adj_t(self, adj_t: Union[Tensor, SparseTensor], num_nodes: int,
                         dtype: torch.dtype) -> Union[Tensor, SparseTensor]:
        """Normalise a sparse ``adj_t`` through the edge_index path, returned in its kind
        (torch sparse input -> torch CSR, SparseTensor input -> SparseTensor)."""
        if self.flow != 'source_to_target':
            raise ValueError("a sparse adjacency input needs flow='source_to_target' "
                             "(it is read as adj_t[target, source])")
        (target, source), value = to_edge_index(adj_t)
        edge_index, edge_weight = self._normalize(torch.stack([source, target]),
                                                  value.to(dtype), num_nodes, dtype)
        if isinstance(adj_t, SparseTensor):
            return SparseTensor(row=edge_index[1], col=edge_index[0], value=edge_weight,
                                sparse_sizes=(num_nodes, num_nodes))
        # duplicates (an existing self loop plus the added one) are summed by the conversion
        return to_torch_csr_tensor(edge_index.flip(0), edge_weight, size=(num_nodes, num_nodes))

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        return spmm(adj_t, x, reduce=self.aggr)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(normalize={self.normalize!r}, '
                f'add_self={self.add_self}, cached={self.cached})')
