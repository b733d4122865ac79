r"""Normalised per-behavior sparse operators of the multiplex user-item graph, built once and
cached (with their transposes) on the model's device.

Every operator is a :math:`(|U| + |I|) \times (|U| + |I|)` matrix over the node order *users
``0..U-1``, then items ``U..U+I-1``*, built from the bipartite adjacency of one behavior (or of
the union of several)

.. math::
    \mathbf{A}_k = \begin{bmatrix} \mathbf{0} & \mathbf{R}_k \\
                                   \mathbf{R}_k^\top & \mathbf{0} \end{bmatrix},

with :math:`\mathbf{R}_k \in \{0, 1\}^{|U| \times |I|}` the training interactions of behavior
:math:`k`. The normalisations (``norm=``) are

* ``'symmetric'``: :math:`\mathbf{D}^{-1/2} \mathbf{A} \mathbf{D}^{-1/2}` (LightGCN);
* ``'left'``: :math:`\mathbf{D}^{-1} \mathbf{A}` (the PKEF and COPF authors' code);
* ``'left_self_loop'``: :math:`\hat{\mathbf{D}}^{-1} (\mathbf{A} + \mathbf{I})` with
  :math:`\hat{\mathbf{D}}_{ii} = \sum_j (\mathbf{A} + \mathbf{I})_{ij}` (PKEF eq 9, whose layer
  is :math:`\mathbf{z} \leftarrow \hat{\mathbf{A}}_k \mathbf{z} + \mathbf{z}`);
* ``'left_plus_identity'``: :math:`\mathbf{D}^{-1} \mathbf{A} + \mathbf{I}` (one term of COPF
  eq 5);
* ``'none'``: :math:`\mathbf{A}`,

where :math:`\mathbf{D}_{ii} = \sum_j \mathbf{A}_{ij}`. A node of degree zero gets
:math:`\mathbf{D}^{-1}_{ii} = 0` (not ``inf``): its row of :math:`\mathbf{D}^{-1}\mathbf{A}`
(or of the symmetric form) is all zeros; the ``+ I`` of ``'left_plus_identity'`` and the self
loop of ``'left_self_loop'`` (degree 1 there) still put a 1 on its diagonal. One function,
:func:`normalize_edges`, computes every normalisation, here and in
:class:`mbgraph.nn.conv.BehaviorConv`.

Three kinds of operator:

* :meth:`BehaviorAdjacency.operator` with one behavior: :math:`\mathrm{norm}(\mathbf{A}_k)`;
* :meth:`BehaviorAdjacency.operator` with several behaviors: the normalised *union*
  :math:`\mathrm{norm}(\mathbf{A}_{k_1} \lor \dots \lor \mathbf{A}_{k_m})` (binary, merged
  interactions), as LightGCN on merged behaviors and COGCN *as the authors coded it*
  (``operator(behaviors[:k+1], norm='left')``, one layer ``E <- A E + E``);
* :meth:`BehaviorAdjacency.cumulative`: COPF eq 5's operator
  :math:`\sum_{k' \le k} \mathrm{norm}(\mathbf{A}_{k'})`, summed once into ONE sparse matrix
  (not :math:`k` products per layer).

Each is kept as a torch sparse CSR tensor together with its transpose in CSR, so ``op @ x``
(forward) and the gradient ``op.T @ grad`` (backward) are both one CSR x dense product; on
CUDA these run cuSPARSE. Example (3 users, 4 items)::

    >>> import torch
    >>> from mbgraph.data import make_multiplex
    >>> data = make_multiplex(3, 4, ['cart', 'buy'], edges={
    ...     'cart': torch.tensor([[0, 1, 2], [0, 1, 3]]), 'buy': torch.tensor([[0], [1]])})
    >>> adj = BehaviorAdjacency(data)
    >>> op = adj.operator('buy', norm='left_self_loop')     # PKEF eq 9's normalised A_k
    >>> z = torch.ones(adj.num_nodes, 8)
    >>> (op @ z + z).shape                                    # one PKEF layer
    torch.Size([7, 8])
    >>> adj.cumulative('buy').nnz     # COPF eq 5 as one CSR matrix: 2 x 4 pairs + 7 diagonal
    15
"""
from __future__ import annotations

import functools
import importlib
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .multiplex import behaviors_of, edge_type, num_users_items

NORMS = ('symmetric', 'left', 'left_self_loop', 'left_plus_identity', 'none')
BACKENDS = ('torch', 'cached', 'torch_sparse')
# norms whose operator is a symmetric matrix (A is symmetric): the transpose is the operator itself
_SYMMETRIC_NORMS = ('symmetric', 'none')

_SPARSE_EXTRA_HINT = ("install the optional sparse extra: pip install 'mbgraph[sparse]' "
                      "(torch_sparse is a source build on PyPI, several minutes), or use "
                      "backend='cached'")


@functools.lru_cache(maxsize=None)
def _import_torch_sparse():
    """``torch_sparse`` if it imports, else None (tried once per process)."""
    try:
        return importlib.import_module('torch_sparse')
    except Exception:  # ImportError, or an OSError from a binary built for another torch
        return None


def available_backends() -> List[str]:
    """The ``op @ x`` backends usable in this environment (``'torch_sparse'`` only if
    ``import torch_sparse`` works)."""
    backends = ['torch', 'cached']
    if _import_torch_sparse() is not None:
        backends.append('torch_sparse')
    return backends


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if backend == 'torch_sparse' and _import_torch_sparse() is None:
        raise ImportError(f"backend 'torch_sparse' needs the torch_sparse package, which cannot "
                          f"be imported here: {_SPARSE_EXTRA_HINT}")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {list(NORMS)}")


def _unique(x: Tensor) -> Tensor:
    """Sorted unique values of a 1-D integer tensor (sort-based; on CPU several times faster
    than ``torch.unique`` without ``return_inverse``)."""
    x = torch.sort(x).values
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


def _csr_pair(row: Tensor, col: Tensor, values: List[Tensor], n: int,
              coalesce: bool) -> List[Tensor]:
    """``n x n`` torch sparse CSR tensors, one per entry of ``values``, all on the sparsity
    pattern ``(row, col)`` and sharing its index tensors (vectorised, one sort). With
    ``coalesce`` repeated ``(row, col)`` entries are summed; otherwise they must be unique."""
    key, perm = torch.sort(row * n + col)
    values = [v[perm] for v in values]
    if coalesce and key.numel() > 0:
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        segment = torch.cumsum(first, 0) - 1
        key = key[first]
        values = [v.new_zeros(key.numel()).index_add_(0, segment, v) for v in values]
    row, col = key // n, key % n
    crow = torch.zeros(n + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": noise for our users
        warnings.filterwarnings('ignore', message='.*Sparse CSR tensor support is in beta.*')
        return [torch.sparse_csr_tensor(crow, col, v, (n, n), check_invariants=False)
                for v in values]


class _CachedTransposeSpMM(torch.autograd.Function):
    """``y = A @ x`` whose backward is ``A^T @ grad`` with the cached CSR transpose.

    Gradients flow to ``x`` only; ``A`` is a constant (no gradient w.r.t. its values).
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, a_t: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # differentiable itself (plain torch.sparse.mm), so double backward works too
        return torch.sparse.mm(ctx.a_t, grad.contiguous()), None, None


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:   # torch < 2.4: one flag per device type
        return (torch.is_autocast_cpu_enabled() if device_type == 'cpu'
                else torch.is_autocast_enabled())


class SparseOperator:
    r"""A constant sparse :math:`N \times N` operator kept in CSR together with its CSR
    transpose; ``op @ x`` multiplies a dense ``[N, d]`` (or ``[N]``) tensor.

    ``op @ x`` is differentiable with respect to ``x`` (not w.r.t. the operator's values). The
    backend decides how:

    * ``'cached'`` (default): ``torch.sparse.mm(A, x)`` forward and ``torch.sparse.mm(A^T, g)``
      backward with the cached transpose, so backward costs about what forward costs;
    * ``'torch'``: ``torch.sparse.mm(A, x)`` with torch's own autograd (which transposes ``A`` on
      every backward call);
    * ``'torch_sparse'``: ``torch_sparse.SparseTensor.matmul`` (needs the ``[sparse]`` extra).

    Args:
        csr (Tensor): the operator, a torch sparse CSR tensor.
        csr_t (Tensor, optional): its transpose in CSR; computed if omitted. Pass ``csr`` itself
            for a symmetric operator.
        backend (str, optional): ``'cached'``, ``'torch'`` or ``'torch_sparse'``.
            (default: :obj:`'cached'`)
        description (str, optional): shown in ``repr`` (which behaviors, which norm).
    """

    def __init__(self, csr: Tensor, csr_t: Optional[Tensor] = None, backend: str = 'cached',
                 description: str = ''):
        if csr.layout != torch.sparse_csr:
            raise ValueError(f'SparseOperator needs a torch sparse CSR tensor, got layout '
                             f'{csr.layout}')
        _check_backend(backend)
        if csr_t is None:
            csr_t = _transpose_csr(csr)
        self.csr = csr
        self.csr_t = csr_t
        self.backend = backend
        self.description = description
        self._t: Optional[SparseOperator] = None
        self._st = None  # torch_sparse.SparseTensor, built on first use

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> torch.Size:
        return self.csr.shape

    @property
    def nnz(self) -> int:
        return int(self.csr.values().numel())

    @property
    def device(self) -> torch.device:
        return self.csr.device

    @property
    def dtype(self) -> torch.dtype:
        return self.csr.dtype

    @property
    def is_symmetric(self) -> bool:
        """True when the operator is stored as its own transpose."""
        return self.csr_t is self.csr

    # ------------------------------------------------------------------ products
    def matmul(self, x: Tensor) -> Tensor:
        """``self @ x`` for dense ``x`` of shape ``[N, d]`` or ``[N]``."""
        if not isinstance(x, Tensor) or x.layout != torch.strided:
            raise TypeError(f'SparseOperator @ x needs a dense tensor x, got {type(x).__name__}'
                            + (f' with layout {x.layout}' if isinstance(x, Tensor) else ''))
        if x.dim() == 1:
            return self.matmul(x.unsqueeze(-1)).squeeze(-1)
        if x.dim() != 2 or x.size(0) != self.shape[1]:
            raise ValueError(f'cannot multiply the {tuple(self.shape)} operator with x of shape '
                             f'{tuple(x.shape)}: x must be [{self.shape[1]}, d]')
        if x.device != self.device:
            raise ValueError(f'x is on {x.device} but the operator is on {self.device}; move '
                             f'the operators once with adj.to(device) (or op.to(device))')
        if _autocast_enabled(x.device.type):
            # under torch.autocast (``--amp``) the propagation stays in the operator's float32:
            # sparse kernels have no bfloat16 path on CPU, and summing hundreds of neighbour
            # messages in float16 / bfloat16 loses the small normalised weights
            with torch.autocast(x.device.type, enabled=False):
                return self.matmul(x.to(self.dtype) if x.is_floating_point() else x)
        if x.dtype != self.dtype:
            raise ValueError(f'x has dtype {x.dtype} but the operator has {self.dtype}; build '
                             f'the adjacency with dtype={x.dtype} or use op.to(dtype=...)')
        if self.backend == 'cached':
            return _CachedTransposeSpMM.apply(x, self.csr, self.csr_t)
        if self.backend == 'torch':
            return torch.sparse.mm(self.csr, x)
        return self._sparse_tensor().matmul(x)

    def __matmul__(self, x: Tensor) -> Tensor:
        return self.matmul(x)

    def _sparse_tensor(self):
        if self._st is None:
            torch_sparse = _import_torch_sparse()
            if torch_sparse is None:
                raise ImportError(f"backend 'torch_sparse' needs the torch_sparse package: "
                                  f"{_SPARSE_EXTRA_HINT}")
            st = torch_sparse.SparseTensor(
                rowptr=self.csr.crow_indices(), col=self.csr.col_indices(),
                value=self.csr.values(), sparse_sizes=tuple(self.shape), is_sorted=True,
                trust_data=True)
            st.fill_cache_()  # colptr / csr2csc: the backward's transpose, kept
            self._st = st
        return self._st

    # ------------------------------------------------------------------ conversions
    def t(self) -> 'SparseOperator':
        """The transposed operator; it shares this operator's tensors and is itself cached
        (``op.t() is op.t()`` and ``op.t().t() is op``)."""
        if self.is_symmetric:
            return self
        if self._t is None:
            self._t = SparseOperator(self.csr_t, self.csr, self.backend,
                                     f'transpose of {self.description}'.strip())
            self._t._t = self
        return self._t

    @property
    def T(self) -> 'SparseOperator':
        return self.t()

    def to_dense(self) -> Tensor:
        return self.csr.to_dense()

    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Optional[torch.dtype] = None) -> 'SparseOperator':
        """A copy on ``device`` / with value ``dtype`` (``self`` if nothing changes)."""
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else dtype
        if device == self.device and dtype == self.dtype:
            return self
        csr = self.csr.to(device=device, dtype=dtype)
        csr_t = csr if self.is_symmetric else self.csr_t.to(device=device, dtype=dtype)
        return SparseOperator(csr, csr_t, self.backend, self.description)

    def with_backend(self, backend: str) -> 'SparseOperator':
        """The same operator (shared tensors) multiplying with another backend."""
        if backend == self.backend:
            return self
        return SparseOperator(self.csr, self.csr_t, backend, self.description)

    def __repr__(self) -> str:
        what = f'{self.description}, ' if self.description else ''
        return (f'SparseOperator({what}shape={tuple(self.shape)}, nnz={self.nnz}, '
                f'backend={self.backend!r}, device={self.device})')


def _transpose_csr(csr: Tensor) -> Tensor:
    if csr.size(0) != csr.size(1):
        raise ValueError(f'SparseOperator needs a square matrix, got {tuple(csr.shape)}')
    n_rows = csr.size(0)
    crow = csr.crow_indices()
    row = torch.repeat_interleave(torch.arange(n_rows, device=csr.device), crow.diff())
    return _csr_pair(csr.col_indices(), row, [csr.values()], n_rows, coalesce=False)[0]


def spmm(op: Union[SparseOperator, Tensor], x: Tensor) -> Tensor:
    """``op @ x`` for a :class:`SparseOperator`, a torch sparse tensor (COO / CSR / CSC) or a
    ``torch_sparse.SparseTensor``; differentiable w.r.t. ``x``."""
    if isinstance(op, SparseOperator):
        return op.matmul(x)
    if isinstance(op, Tensor) and op.layout in (torch.sparse_coo, torch.sparse_csr,
                                                torch.sparse_csc):
        return torch.sparse.mm(op, x)
    torch_sparse = _import_torch_sparse()
    if torch_sparse is not None and isinstance(op, torch_sparse.SparseTensor):
        return op.matmul(x)
    raise TypeError(f'spmm needs a SparseOperator, a torch sparse tensor or a '
                    f'torch_sparse.SparseTensor, got {type(op).__name__}')


def normalize_edges(row: Tensor, col: Tensor, num_nodes: int, norm: str,
                    weight: Optional[Tensor] = None, dtype: Optional[torch.dtype] = None,
                    transpose: bool = False
                    ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    r"""The normalisations of :data:`NORMS` on an edge list, as PyG's ``gcn_norm`` is
    :class:`~torch_geometric.nn.conv.GCNConv`'s: the one function behind
    :class:`BehaviorAdjacency`'s operators and :class:`mbgraph.nn.conv.BehaviorConv`.

    The matrix is :math:`\mathbf{A}` with :math:`\mathbf{A}_{ij}` = ``weight[e]`` at
    ``(i, j) = (row[e], col[e])`` (1 without ``weight``) and :math:`\mathbf{D}_{ii} = \sum_j
    \mathbf{A}_{ij}`; a node of degree zero gets :math:`\mathbf{D}^{-1}_{ii} = 0`. The
    diagonal of ``'left_self_loop'`` (every node's self loop of weight 1, counted in its
    degree) and of ``'left_plus_identity'`` (the ``+ I``) is appended after the edges.

    Args:
        row (Tensor): :math:`i` of every edge (the node whose row of :math:`\mathbf{A}` it
            is: the target of the message).
        col (Tensor): :math:`j` of every edge (the source).
        num_nodes (int): :math:`N`.
        norm (str): one of :data:`NORMS`.
        weight (Tensor, optional): the edge weights; ``None``: unit weights.
        dtype (torch.dtype, optional): dtype of the values without ``weight``.
        transpose (bool, optional): also return ``value_t``, the entry of
            :math:`\mathrm{norm}(\mathbf{A})^\top` at ``(row[e], col[e])``. Only valid for a
            symmetric :math:`\mathbf{A}` (every edge listed both ways with the same weight),
            whose normalised transpose has the same sparsity pattern; ``value_t is value``
            for the symmetric norms.

    Returns:
        ``(row, col, value, value_t)``: the edges (with the appended diagonal, if any), their
        normalised values, and ``value_t`` (``None`` unless ``transpose``).
    """
    _check_norm(norm)
    n = num_nodes
    if dtype is None:
        dtype = weight.dtype if weight is not None else torch.get_default_dtype()
    if norm == 'none':
        value = torch.ones(row.numel(), dtype=dtype, device=row.device) if weight is None \
            else weight
        return row, col, value, value if transpose else None
    if norm == 'left_self_loop':  # A + I first: the self loops count in the degree
        loop = torch.arange(n, device=row.device)
        row, col = torch.cat([row, loop]), torch.cat([col, loop])
        if weight is not None:
            weight = torch.cat([weight, weight.new_ones(n)])
    if weight is None:
        deg = torch.bincount(row, minlength=n).to(dtype)
    else:
        deg = weight.new_zeros(n).scatter_add_(0, row, weight)
    if norm == 'symmetric':
        d = deg.pow(-0.5).masked_fill_(deg == 0, 0.)
        value = d[row] * d[col] if weight is None else d[row] * weight * d[col]
        return row, col, value, value if transpose else None
    # left normalisations: D^-1 scales row i, so the transpose's entry (i, j) is 1/d_j
    d = deg.reciprocal().masked_fill_(deg == 0, 0.)
    value = d[row] if weight is None else d[row] * weight
    value_t = None
    if transpose:
        value_t = d[col] if weight is None else d[col] * weight
    if norm == 'left_plus_identity':  # the + I
        loop = torch.arange(n, device=row.device)
        ones = value.new_ones(n)
        row, col, value = torch.cat([row, loop]), torch.cat([col, loop]), torch.cat([value, ones])
        if transpose:
            value_t = torch.cat([value_t, ones])
    return row, col, value, value_t


def _normalized_coo(keys: Tensor, num_users: int, num_items: int, norm: str,
                    dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """COO triples of ``norm(A)`` for the bipartite graph whose unique (user, item) pairs are
    ``keys = user * num_items + item``; rows/cols are (U+I)-node ids.

    Returns ``row, col, value, value_t``: ``value_t[e]`` is the entry of the *transpose* at
    ``(row[e], col[e])``. ``A`` is symmetric, so ``norm(A)^T`` has the same sparsity pattern and
    only its values differ (``value_t is value`` for the symmetric norms).
    """
    users = keys // num_items
    items = keys % num_items + num_users
    return normalize_edges(torch.cat([users, items]), torch.cat([items, users]),
                           num_users + num_items, norm, dtype=dtype, transpose=True)


class BehaviorAdjacency:
    r"""The normalised sparse operators of a multiplex graph (see the module docstring), built
    on first request, cached by ``(behaviors, norm, cumulative)``, and kept on one device.

    Args:
        data (HeteroData): a graph in mbgraph's multiplex schema (:mod:`mbgraph.data.multiplex`).
        device (str or torch.device, optional): where the operators live. (default: ``'cpu'``)
        backend (str, optional): how ``op @ x`` multiplies: ``'cached'`` (CSR forward, cached CSR
            transpose backward), ``'torch'`` (torch's default sparse autograd) or
            ``'torch_sparse'`` (needs the ``[sparse]`` extra). (default: ``'cached'``)
        dtype (torch.dtype, optional): dtype of the operator values. (default: ``torch.float32``)

    Example::

        >>> import torch
        >>> from mbgraph.data import make_multiplex
        >>> data = make_multiplex(2, 2, ['pv', 'buy'], edges={
        ...     'pv': torch.tensor([[0, 0, 1], [0, 1, 1]]), 'buy': torch.tensor([[0], [1]])})
        >>> adj = BehaviorAdjacency(data)
        >>> adj.operator('buy', norm='left').to_dense()
        tensor([[0., 0., 0., 1.],
                [0., 0., 0., 0.],
                [0., 0., 0., 0.],
                [1., 0., 0., 0.]])
        >>> adj.cumulative('buy', norm='left_plus_identity').to_dense()
        tensor([[2.0000, 0.0000, 0.5000, 1.5000],
                [0.0000, 2.0000, 0.0000, 1.0000],
                [1.0000, 0.0000, 2.0000, 0.0000],
                [1.5000, 0.5000, 0.0000, 2.0000]])
    """

    def __init__(self, data: HeteroData, device: Union[str, torch.device] = 'cpu',
                 backend: str = 'cached', dtype: torch.dtype = torch.float32):
        _check_backend(backend)
        self.behaviors: List[str] = behaviors_of(data)
        self.num_users, self.num_items = num_users_items(data)
        self.device = torch.device(device)
        self.backend = backend
        self.dtype = dtype
        # unique sorted (user, item) keys per behavior: the binary R_k
        self._keys: Dict[str, Tensor] = {}
        for b in self.behaviors:
            ei = data[edge_type(b)].edge_index.to(self.device)
            self._check_range(ei, b)
            self._keys[b] = _unique(ei[0] * self.num_items + ei[1])
        self._cache: Dict[tuple, SparseOperator] = {}

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    def _check_range(self, ei: Tensor, behavior: str) -> None:
        if ei.numel() == 0:
            return
        for r, (kind, n) in enumerate((('user', self.num_users), ('item', self.num_items))):
            lo, hi = int(ei[r].min()), int(ei[r].max())
            if lo < 0 or hi >= n:
                raise ValueError(f'edge type {edge_type(behavior)} has {kind} index '
                                 f'{lo if lo < 0 else hi} outside [0, num_{kind}s={n})')

    def _resolve(self, behaviors: Union[str, Sequence[str]]) -> Tuple[str, ...]:
        names = [behaviors] if isinstance(behaviors, str) else list(behaviors)
        if not names:
            raise ValueError(f'at least one behavior is needed; behaviors are {self.behaviors}')
        unknown = [b for b in names if b not in self._keys]
        if unknown:
            raise ValueError(f'unknown behavior {unknown[0]!r}; this graph\'s behaviors are '
                             f'{self.behaviors}')
        # the union does not depend on the order given: key by the graph's behavior order
        wanted = set(names)
        return tuple(b for b in self.behaviors if b in wanted)

    def _union_keys(self, behaviors: Tuple[str, ...]) -> Tensor:
        if len(behaviors) == 1:
            return self._keys[behaviors[0]]
        return _unique(torch.cat([self._keys[b] for b in behaviors]))

    def _make(self, row: Tensor, col: Tensor, value: Tensor, value_t: Tensor, coalesce: bool,
              description: str) -> SparseOperator:
        if value_t is value:  # a symmetric matrix is its own transpose: store it once
            (csr,) = _csr_pair(row, col, [value], self.num_nodes, coalesce)
            return SparseOperator(csr, csr, self.backend, description)
        csr, csr_t = _csr_pair(row, col, [value, value_t], self.num_nodes, coalesce)
        return SparseOperator(csr, csr_t, self.backend, description)

    def operator(self, behaviors: Union[str, Sequence[str]],
                 norm: str = 'symmetric') -> SparseOperator:
        r"""``norm(A)`` of one behavior, or of the union (binary, merged interactions) of several.

        Args:
            behaviors (str or list of str): a behavior name or several names.
            norm (str, optional): ``'symmetric'``, ``'left'``, ``'left_self_loop'``,
                ``'left_plus_identity'`` or ``'none'`` (module docstring).
                (default: ``'symmetric'``)
        """
        _check_norm(norm)
        key = (self._resolve(behaviors), norm, False)
        op = self._cache.get(key)
        if op is None:
            coo = _normalized_coo(self._union_keys(key[0]), self.num_users, self.num_items,
                                  norm, self.dtype)
            op = self._make(*coo, coalesce=False,
                            description=f"{norm}({' | '.join(key[0])})")
            self._cache[key] = op
        return op

    def cumulative(self, behavior: str, norm: str = 'left_plus_identity') -> SparseOperator:
        r"""COPF eq 5's operator for behavior :math:`k`: :math:`\sum_{k' \le k}
        \mathrm{norm}(\mathbf{A}_{k'})` over ``behavior`` and every behavior upstream of it,
        summed once into one CSR matrix.

        With the default norm this is :math:`\sum_{k'=1}^{k} (\mathbf{D}_{k'}^{-1}
        \mathbf{A}_{k'} + \mathbf{I})` (each :math:`\mathbf{D}_{k'}` from its own behavior), so
        one COGCN layer is ``E = adj.cumulative(b) @ E``.

        Args:
            behavior (str): the behavior :math:`k` (one name).
            norm (str, optional): the normalisation of each term. (default:
                ``'left_plus_identity'``)
        """
        _check_norm(norm)
        if not isinstance(behavior, str):
            raise TypeError(f'cumulative takes one behavior name, got {behavior!r}; the '
                            f'upstream behaviors are added from the order {self.behaviors}')
        (name,) = self._resolve(behavior)
        upstream = tuple(self.behaviors[:self.behaviors.index(name) + 1])
        key = (upstream, norm, True)
        op = self._cache.get(key)
        if op is None:
            parts = [_normalized_coo(self._keys[b], self.num_users, self.num_items, norm,
                                     self.dtype) for b in upstream]
            row, col, value, value_t = (torch.cat(t) for t in zip(*parts))
            if norm in _SYMMETRIC_NORMS:
                value_t = value
            op = self._make(row, col, value, value_t, coalesce=True,
                            description=f"sum {norm}({', '.join(upstream)})")
            self._cache[key] = op
        return op

    def to(self, device: Union[str, torch.device]) -> 'BehaviorAdjacency':
        """Move the interactions and every cached operator to ``device`` (in place)."""
        device = torch.device(device)
        self._keys = {b: k.to(device) for b, k in self._keys.items()}
        self._cache = {key: op.to(device) for key, op in self._cache.items()}
        self.device = device
        return self

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_users={self.num_users}, '
                f'num_items={self.num_items}, behaviors={self.behaviors}, '
                f'backend={self.backend!r}, device={self.device}, cached={len(self._cache)})')


def to_homogeneous_edge_index(data: HeteroData,
                              behaviors: Union[str, Sequence[str], None] = None) -> Tensor:
    r"""The symmetric ``[2, 2E]`` edge_index of the union of ``behaviors`` (default: all) on
    the ``U + I`` homogeneous node set (users ``0..U-1``, items ``U..U+I-1``), each undirected
    user-item interaction once in each direction, duplicates merged.

    This is the input of :class:`mbgraph.nn.conv.BehaviorConv` (and of any PyG layer) for a
    multiplex graph; ``x`` then has ``U + I`` rows.
    """
    all_behaviors = behaviors_of(data)
    names = all_behaviors if behaviors is None else (
        [behaviors] if isinstance(behaviors, str) else list(behaviors))
    unknown = [b for b in names if b not in all_behaviors]
    if unknown:
        raise ValueError(f'unknown behavior {unknown[0]!r}; this graph\'s behaviors are '
                         f'{all_behaviors}')
    if not names:
        raise ValueError(f'at least one behavior is needed; behaviors are {all_behaviors}')
    num_users, num_items = num_users_items(data)
    keys = _unique(torch.cat([
        data[edge_type(b)].edge_index[0] * num_items + data[edge_type(b)].edge_index[1]
        for b in names]))
    users, items = keys // num_items, keys % num_items + num_users
    return torch.stack([torch.cat([users, items]), torch.cat([items, users])])
