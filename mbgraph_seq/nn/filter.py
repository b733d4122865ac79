r"""The Efficient Behavior Miner's layers (DPCPL, Wang et al., sec. 4.2).

* :class:`ChunkedComplexMLP` -- the frequency-aware fusion with the chunked diagonal mechanism
  (eq 3): the ``d`` channels of every frequency token are cut into ``k`` blocks of ``d/k``;
  block ``n`` goes through a two-layer complex MLP
  :math:`\tilde x^n_i = W^n_2\,\sigma(W^n_1 x^n_i + b^n_1) + b^n_2` whose weights are shared by
  all frequency tokens ``i``. Parameters: :math:`4d^2/k + 4d` (real and imaginary parts), none
  depending on the sequence length (Table 1).
* :class:`EfficientFilterLayer` -- eq 2 with that fusion: :math:`X = \mathcal F(S)` (real FFT
  along the sequence), :math:`\tilde X = \mathrm{MLP}(X)`, :math:`\tilde S = \mathcal
  F^{-1}(\tilde X)`, then residual + LayerNorm and a position-wise feed-forward network with
  its own residual + LayerNorm.
* :class:`SelfAttentionLayer` -- the Efficient Filter Layer with its filter replaced by
  bidirectional multi-head self-attention (DPCPL table 5's "w/o DS" ablation).
* :class:`CausalFilterLayer` -- not in the paper: a *causal* stand-in for the Efficient Filter
  Layer (a long causal convolution by FFT whose kernel is generated from the lag, then the
  chunked block-diagonal MLP position by position), so that every position of a sequence can
  be a next-item target in one pass; its parameter count is independent of the length, as
  Table 1 asks of the filter. ``sequence_mixer='causal_filter'``.
* :class:`BehaviorMinerLayer` -- one EBM layer: the overall sequence and each behavior's
  sub-sequence pass the filter layer (or, with ``sequence_mixer='attention'``, the
  self-attention layer), a fully connected behavior mixer combines them.

Neither the filter nor the self-attention layer is *causal*: the output at a position depends
on every position of the sequence, so next-item training must cut sequences before the
predicted event (see :class:`mbgraph_seq.data.SequenceTrainSource`, ``prefixes``). The causal
filter layer's output at a position depends on that position and earlier ones only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import MultiHeadSelfAttention, bidirectional_attention_mask

#: the sequence mixers of an EBM layer: the Efficient Filter Layer (the paper's denoising
#: block), self-attention in its place (table 5's "w/o DS"), or the causal filter (not in the
#: paper: :class:`CausalFilterLayer`)
SEQUENCE_MIXERS = ('filter', 'attention', 'causal_filter')
#: the mixers whose output at a position never depends on later positions
CAUSAL_MIXERS = ('causal_filter',)

_ACTIVATIONS = {'relu': F.relu, 'gelu': F.gelu, 'tanh': torch.tanh}


def check_sequence_mixer(name: str) -> str:
    """``name`` if it is one of :data:`SEQUENCE_MIXERS`, else a ValueError that lists them."""
    if name not in SEQUENCE_MIXERS:
        raise ValueError(f'unknown sequence_mixer {name!r}; known: {", ".join(SEQUENCE_MIXERS)} '
                         "('attention' = DPCPL table 5's w/o DS, 'causal_filter' = a causal "
                         'stand-in for the filter, not in the paper)')
    return name


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f'unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}')
    return _ACTIVATIONS[name]


class _ChunkedBlocks(nn.Module):
    """What eq 3's chunked diagonal mechanism shares between its complex (frequency tokens)
    and real (positions) forms: ``d`` channels cut into ``k`` blocks of ``d/k``, each block
    through its own two-layer MLP whose weights every token shares."""

    def __init__(self, dim: int, num_blocks: int, activation: str):
        super().__init__()
        if num_blocks < 1 or dim % num_blocks != 0:
            raise ValueError(f'num_blocks={num_blocks} must be a positive divisor of dim={dim}')
        self.dim, self.num_blocks = int(dim), int(num_blocks)
        self.block = dim // num_blocks
        self.act = _activation(activation)

    def _check_channels(self, x: Tensor) -> None:
        if x.size(-1) != self.dim:
            raise ValueError(f'expected {self.dim} channels in the last dimension, got '
                             f'{x.size(-1)}')

    def _two_layers(self, h: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        """``[k, T, width]`` blocks of ``T`` tokens -> ``act(h w1 + b1) w2 + b2`` per block."""
        return torch.baddbmm(b2, self.act(torch.baddbmm(b1, h, w1)), w2)


class ChunkedComplexMLP(_ChunkedBlocks):
    r"""Block-diagonal two-layer complex MLP over frequency tokens (DPCPL eq 3).

    For a complex input ``x`` of shape ``[..., F, d]`` (``F`` frequency tokens), block ``n``
    (channels ``n*d/k .. (n+1)*d/k - 1``) of token ``i`` becomes

    .. math::
        \tilde x^n_i = W^n_2\,\sigma(W^n_1 x^n_i + b^n_1) + b^n_2,
        \qquad W^n_1, W^n_2 \in \mathbb C^{d/k \times d/k},\ b^n_1, b^n_2 \in \mathbb C^{d/k}

    with :math:`\sigma` applied to the real and imaginary parts separately. The same weights
    serve every token, so the parameter count :math:`4d^2/k + 4d` is independent of ``F``.

    Args:
        dim: channels ``d``.
        num_blocks: blocks ``k`` (must divide ``d``).
        activation: :math:`\sigma`: ``'relu'``, ``'gelu'`` or ``'tanh'``.
        init_scale: standard deviation of the real and imaginary parts of the initial
            weights; default :math:`1/\sqrt{2 d/k}` (complex variance ``k/d``, so a block keeps
            its input's scale and the filter mixes the sequence from the start). Biases start
            at zero. Weights are stored as ``[in, out]`` (``x @ W``, i.e. the paper's ``W x``
            with ``W`` transposed).
    """

    def __init__(self, dim: int, num_blocks: int = 4, activation: str = 'relu',
                 init_scale: Optional[float] = None):
        super().__init__(dim, num_blocks, activation)
        k, c = self.num_blocks, self.block
        scale = (2 * c) ** -0.5 if init_scale is None else float(init_scale)
        # [real/imag, block n, in, out]
        self.w1 = nn.Parameter(scale * torch.randn(2, k, c, c))
        self.b1 = nn.Parameter(torch.zeros(2, k, c))
        self.w2 = nn.Parameter(scale * torch.randn(2, k, c, c))
        self.b2 = nn.Parameter(torch.zeros(2, k, c))

    def _real_block_weight(self, w: Tensor) -> Tensor:
        """``[k, 2c, 2c]`` real matrices acting on ``[Re x, Im x]``: complex multiplication by
        :math:`W = W_r + i W_i` is ``[x_r, x_i] @ [[W_r, W_i], [-W_i, W_r]]``."""
        wr, wi = w[0], w[1]
        return torch.cat([torch.cat([wr, wi], 2), torch.cat([-wi, wr], 2)], 1)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_complex(x):
            raise TypeError(f'ChunkedComplexMLP expects a complex tensor, got {x.dtype}')
        self._check_channels(x)
        pairs = self.forward_pairs(torch.stack([x.real, x.imag], -2).reshape(-1, 2, self.dim))
        return torch.complex(pairs[:, 0], pairs[:, 1]).reshape(x.shape)

    def forward_pairs(self, z: Tensor) -> Tensor:
        """The same map on real pairs: ``z`` ``[T, 2, d]`` holds the real (``z[:, 0]``) and
        imaginary (``z[:, 1]``) parts of ``T`` tokens; returns the output in that layout.

        No complex tensor and no copy of the input: each block's real and imaginary parts are
        strided views that the first layer's two products read in place
        (:math:`[x_r, x_i] W = x_r W_{top} + x_i W_{bottom}`)."""
        if z.dim() != 3 or z.size(1) != 2:
            raise ValueError(f'expected [tokens, 2, {self.dim}] real/imaginary pairs, got '
                             f'{tuple(z.shape)}')
        self._check_channels(z)
        k, c = self.num_blocks, self.block
        T = z.size(0)
        # [k, T, c] views of the real and imaginary parts of every block
        re = z[:, 0].unflatten(-1, (k, c)).transpose(0, 1)
        im = z[:, 1].unflatten(-1, (k, c)).transpose(0, 1)
        w1 = self._real_block_weight(self.w1)                              # [k, 2c, 2c]
        b1 = torch.cat([self.b1[0], self.b1[1]], -1).unsqueeze(1)           # [k, 1, 2c]
        b2 = torch.cat([self.b2[0], self.b2[1]], -1).unsqueeze(1)
        h = torch.baddbmm(torch.baddbmm(b1, re, w1[:, :c]), im, w1[:, c:])
        # sigma on the real and imaginary parts separately = elementwise on [Re, Im]
        h = torch.baddbmm(b2, self.act(h), self._real_block_weight(self.w2))  # [k, T, 2c]
        return h.view(k, T, 2, c).permute(1, 2, 0, 3).reshape(T, 2, self.dim)


class FeedForward(nn.Module):
    """Position-wise ``Linear -> activation -> dropout -> Linear``."""

    def __init__(self, dim: int, hidden: Optional[int] = None, dropout: float = 0.0,
                 activation: str = 'gelu'):
        super().__init__()
        hidden = hidden or dim
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class EfficientFilterLayer(nn.Module):
    r"""The Efficient Filter Layer (DPCPL eq 2-3 and the text after eq 3).

    .. math::
        X = \mathcal F(S),\quad \tilde X = \mathrm{MLP}_{\text{chunked}}(X),\quad
        \tilde S = \mathcal F^{-1}(\tilde X),\quad
        H = \mathrm{LN}(S + \mathrm{Drop}(\tilde S)),\quad
        \mathrm{out} = \mathrm{LN}(H + \mathrm{Drop}(\mathrm{FFN}(H)))

    :math:`\mathcal F` is the real FFT along the sequence (orthonormal scaling). Padding
    positions (``mask`` False) are zeroed on input and output.

    Args:
        dim: channels ``d``.
        num_blocks: chunks ``k`` of :class:`ChunkedComplexMLP`.
        dropout: dropout after the filter and in/after the FFN.
        ffn_hidden: FFN hidden width (default ``d``, as SASRec's point-wise FFN).
        activation: the complex MLP's :math:`\sigma`.
    """

    def __init__(self, dim: int, num_blocks: int = 4, dropout: float = 0.1,
                 ffn_hidden: Optional[int] = None, activation: str = 'relu'):
        super().__init__()
        self.fusion = ChunkedComplexMLP(dim, num_blocks, activation)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_hidden, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def filter(self, x: Tensor) -> Tensor:
        """:math:`\\tilde S = \\mathcal F^{-1}(\\mathrm{MLP}(\\mathcal F(S)))` (``[B, L, d]``).

        Up to :data:`DFT_MATMUL_MAX_LENGTH` positions the two transforms are products with
        the real DFT matrices of :func:`real_dft_matrices` (the same orthonormal real FFT and
        its inverse, to float rounding): at EBM's lengths (50) a matrix product is cheaper
        than the FFT along a middle axis, which copies the input to a transposed layout and
        whose backward runs a complex FFT over a zero-padded copy (together 60% of an
        all-cuts EBM step on CPU before). Longer sequences use ``torch.fft``."""
        B, length, d = x.shape
        # float32 even under torch.autocast (--amp): there is no bfloat16 FFT on CPU, half
        # precision cuFFT takes power-of-two lengths only, and the spectrum's complex MLP
        # has no low-precision complex path
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if length > DFT_MATMUL_MAX_LENGTH:
                spec = torch.fft.rfft(x, dim=1, norm='ortho')
                return torch.fft.irfft(self.fusion(spec), n=length, dim=1, norm='ortho')
            forward, inverse = real_dft_matrices(length, x.device)
            pairs = torch.matmul(forward, x)                   # [B, 2F, d]: (f, re/im) rows
            pairs = self.fusion.forward_pairs(pairs.view(-1, 2, d))
            return torch.matmul(inverse, pairs.view(B, -1, d))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, last_only: bool = False
                ) -> Tensor:
        """``x`` ``[B, L, d]`` -> ``[B, L, d]``; with ``last_only`` only the last position's
        output ``[B, d]`` is computed (the filter still reads every position; the residual,
        LayerNorms and FFN are position-wise, so the result equals ``forward(x)[:, -1]``)."""
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        filtered = self.filter(x)
        if last_only:
            x, filtered = x[:, -1], filtered[:, -1]
            mask = None if mask is None else mask[:, -1]
        elif mask is not None:
            # everything after the filter is position-wise and padding is zeroed at the end,
            # so only the real positions are computed (the same function: in a behavior's
            # sub-sequence view most positions are padding, and dropout's random draws were
            # a sixth of an all-cuts EBM step)
            B, L, d = x.shape
            rows = mask.reshape(-1).nonzero().squeeze(1)
            kept = self._positionwise(x.reshape(-1, d).index_select(0, rows),
                                      filtered.reshape(-1, d).index_select(0, rows))
            return kept.new_zeros(B * L, d).index_copy(0, rows, kept).view(B, L, d)
        out = self._positionwise(x, filtered)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out

    def _positionwise(self, x: Tensor, filtered: Tensor) -> Tensor:
        """The residual + LayerNorm, FFN and residual + LayerNorm after the filter."""
        h = self.norm1(x + self.dropout(filtered))
        return self.norm2(h + self.dropout(self.ffn(h)))


#: the longest sequence whose filter runs as products with the DFT matrices, and whose causal
#: convolution as products with Toeplitz matrices (O(L^2 d) per sequence; beyond it
#: ``torch.fft``, O(L log L d))
DFT_MATMUL_MAX_LENGTH = 256

_DFT_CACHE: dict = {}


def real_dft_matrices(length: int, device=None) -> tuple:
    r"""The orthonormal real DFT of ``length`` points and its inverse as real float32 matrices:
    ``forward`` ``[2F, L]`` (``F = L // 2 + 1``; row ``2f`` gives :math:`\mathrm{Re}\,X_f`,
    row ``2f + 1`` :math:`\mathrm{Im}\,X_f`, :math:`X_f = L^{-1/2}\sum_t s_t e^{-2\pi i f
    t / L}`, ``torch.fft.rfft(norm='ortho')``) and ``inverse`` ``[L, 2F]``, the real inverse
    of the Hermitian-completed spectrum (``torch.fft.irfft(n=L, norm='ortho')``: the
    imaginary parts of the DC and, for even ``L``, Nyquist bins are ignored, every other bin
    counts twice). Built in float64 and cached per (length, device)."""
    key = (int(length), str(device))
    cached = _DFT_CACHE.get(key)
    if cached is not None:
        return cached
    L = int(length)
    t = torch.arange(L, dtype=torch.float64)
    f = torch.arange(L // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * f[:, None] * t[None, :] / L                         # [F, L]
    forward = torch.stack([torch.cos(angle), -torch.sin(angle)], 1).reshape(-1, L)
    twice = torch.full((f.numel(),), 2.0, dtype=torch.float64)
    twice[0] = 1.0
    if L % 2 == 0:
        twice[-1] = 1.0
    inverse = torch.stack([twice[:, None] * torch.cos(angle),
                           -twice[:, None] * torch.sin(angle)], 1).reshape(-1, L).t()
    scale = L ** -0.5
    pair = ((forward * scale).float().to(device).contiguous(),
            (inverse * scale).float().to(device).contiguous())
    _DFT_CACHE[key] = pair
    return pair


def lag_features(length: int, num_features: int, device=None) -> Tensor:
    r"""``[length, num_features]`` fixed features of the lags :math:`t = 0 .. length - 1`:
    :math:`\sin(\omega_j t), \cos(\omega_j t)` for ``num_features / 2`` angular frequencies
    :math:`\omega_j = \pi \cdot 512^{-j / (J - 1)}`, :math:`j = 0 .. J - 1` (from the Nyquist
    frequency, a period of 2 positions, to a period of 1,024). They do not depend on
    ``length`` (the features of lag ``t`` are the same for every sequence length), so neither
    does anything computed from them."""
    if num_features < 2 or num_features % 2:
        raise ValueError(f'num_features must be a positive even number, got {num_features}')
    half = num_features // 2
    exponent = torch.arange(half, dtype=torch.float32, device=device) / max(half - 1, 1)
    omega = math.pi * 512.0 ** -exponent                                  # [J]
    angle = torch.arange(length, dtype=torch.float32, device=device)[:, None] * omega
    return torch.cat([angle.sin(), angle.cos()], 1)


class CausalKernel(nn.Module):
    r"""A causal convolution kernel of any length generated from the lag (not in the paper).

    .. math::
        k_{t,c} = \big(W_2\,\sigma(W_1 \phi(t) + b_1) + b_2\big)_c\;
                  e^{-\mathrm{softplus}(\rho_c)\,t}, \qquad t = 0, 1, \dots

    with :math:`\phi` the :func:`lag_features` and one learned decay rate per channel
    (initialised log-spaced from 1 to 1/256 per position across the channels, so that some
    channels look back a few positions and others the whole sequence). Parameters:
    :math:`Fh + h + hd + 2d`, none depending on the length.

    Args:
        dim: channels ``d``.
        num_features: lag features ``F`` (even).
        hidden: hidden width ``h`` (default ``d``).
        activation: :math:`\sigma`.
    """

    def __init__(self, dim: int, num_features: int = 16, hidden: Optional[int] = None,
                 activation: str = 'relu'):
        super().__init__()
        lag_features(1, num_features)                                     # checks the count
        self.num_features = int(num_features)
        hidden = hidden or dim
        self.fc1, self.fc2 = nn.Linear(num_features, hidden), nn.Linear(hidden, dim)
        self.act = _activation(activation)
        rate = torch.logspace(0, -math.log10(256), dim)                  # per position
        self.decay = nn.Parameter(torch.log(torch.expm1(rate)))          # softplus^-1

    def forward(self, length: int) -> Tensor:
        """``[length, d]``: row ``t`` is the weight of the input ``t`` positions back."""
        phi = lag_features(length, self.num_features, self.fc1.weight.device)
        raw = self.fc2(self.act(self.fc1(phi)))
        lags = torch.arange(length, dtype=raw.dtype, device=raw.device)[:, None]
        return raw * torch.exp(-F.softplus(self.decay) * lags)


def causal_convolution(x: Tensor, kernel: Tensor) -> Tensor:
    r""":math:`y_{b,t,c} = \sum_{s=0}^{t} k_{t-s,c}\, x_{b,s,c}` for ``x`` ``[B, L, d]`` and
    ``kernel`` ``[L, d]``.

    Up to :data:`DFT_MATMUL_MAX_LENGTH` positions as a product with each channel's lower
    triangular Toeplitz matrix :math:`T_c[t, s] = k_{t-s,c}` (:math:`s \le t`), :math:`O(L^2)`
    per channel but a few batched matrix products (4.5x faster than the FFT at L = 50 in a
    CPU benchmark of the convolution alone, forward and backward; ~10% of a causal EBM
    step); beyond it by FFT over ``2L`` points (zero padding turns the
    circular convolution into the linear one, so no position reads a later one),
    :math:`O(L \log L)` per channel."""
    length = x.size(1)
    if length <= DFT_MATMUL_MAX_LENGTH:
        t = torch.arange(length, device=x.device)
        lag = t[:, None] - t[None, :]                                     # [L (t), L (s)]
        toeplitz = kernel[lag.clamp(min=0)] * (lag >= 0).unsqueeze(-1).to(kernel.dtype)
        return torch.einsum('bsc,tsc->btc', x, toeplitz)
    n = 2 * length
    spectrum = torch.fft.rfft(x, n=n, dim=1) * torch.fft.rfft(kernel, n=n, dim=0)
    return torch.fft.irfft(spectrum, n=n, dim=1)[:, :length]


class ChunkedMLP(_ChunkedBlocks):
    r"""Eq 3's chunked diagonal mechanism with real weights, applied position by position:
    the ``d`` channels are cut into ``k`` blocks of ``d/k`` and block ``n`` becomes
    :math:`W^n_2\,\sigma(W^n_1 x^n + b^n_1) + b^n_2` (:math:`W^n \in \mathbb R^{d/k \times
    d/k}`, shared by all positions). Parameters :math:`2d^2/k + 2d`.

    Args:
        dim: channels ``d``.
        num_blocks: blocks ``k`` (divides ``d``).
        activation: :math:`\sigma`.
    """

    def __init__(self, dim: int, num_blocks: int = 4, activation: str = 'relu'):
        super().__init__(dim, num_blocks, activation)
        k, c = self.num_blocks, self.block
        # [block n, in, out]; the scale keeps a block's input scale
        self.w1 = nn.Parameter(c ** -0.5 * torch.randn(k, c, c))
        self.b1 = nn.Parameter(torch.zeros(k, 1, c))
        self.w2 = nn.Parameter(c ** -0.5 * torch.randn(k, c, c))
        self.b2 = nn.Parameter(torch.zeros(k, 1, c))

    def forward(self, x: Tensor) -> Tensor:
        self._check_channels(x)
        k, c = self.num_blocks, self.block
        lead = x.shape[:-1]
        h = x.reshape(-1, k, c).transpose(0, 1)                            # [k, T, c]
        h = self._two_layers(h, self.w1, self.b1, self.w2, self.b2)
        return h.transpose(0, 1).reshape(*lead, self.dim)


class CausalFilterLayer(nn.Module):
    r"""A causal stand-in for the Efficient Filter Layer (an option, **not in the paper**).

    .. math::
        \tilde S = \mathrm{MLP}_{\text{chunked}}\big(k * S\big),\quad
        H = \mathrm{LN}(S + \mathrm{Drop}(\tilde S)),\quad
        \mathrm{out} = \mathrm{LN}(H + \mathrm{Drop}(\mathrm{FFN}(H)))

    where :math:`(k * S)_t = \sum_{s \le t} k_{t-s} \odot S_s` is a per-channel causal
    convolution over the whole sequence (:func:`causal_convolution`, by FFT) with the kernel
    :class:`CausalKernel` generates from the lag, and :math:`\mathrm{MLP}_{\text{chunked}}`
    is eq 3's block-diagonal two-layer MLP with real weights applied at every position
    (:class:`ChunkedMLP`). The residual, LayerNorms and FFN are the filter layer's.

    What it changes against eq 2-3, and why. Eq 3's complex MLP acts on the frequency tokens
    with weights shared by all of them; without its non-linearity it would be one complex
    channel map :math:`W_r + iW_i` at every frequency, i.e. :math:`S W_r` position by position
    plus a fixed, unlearned two-sided kernel (the discrete Hilbert transform) applied to
    :math:`S W_i`. So the filter learns how to mix positions only through :math:`\sigma` on
    the spectrum, and the output at a position depends on every position, later ones
    included: the model must be trained on sequences cut before each target (one target per
    sample). Here the
    mixing along the sequence is a convolution, as the paper motivates the filter
    ("multiplication in the frequency domain can replace convolution in the time domain",
    sec. 4.2), made causal by zero padding and a kernel that is zero at negative lags; the
    kernel is generated from the lag instead of stored per frequency (FMLP-Rec's learnable
    filter, whose size grows with the length, the problem Table 1 is about), so the parameter
    count stays independent of the length; the channel fusion keeps eq 3's chunks. Every
    position of a training sequence is then a next-item target (``train_layout=None``, as
    SASRec), at :math:`O(L \log L\, d + L d^2 / k)` per sequence.

    Args:
        dim: channels ``d``.
        num_blocks: chunks ``k``.
        dropout: dropout after the filter and in/after the FFN.
        ffn_hidden: FFN hidden width (default ``d``).
        activation: the chunked MLP's and the kernel generator's :math:`\sigma`.
        num_features: lag features of the kernel generator.
    """

    def __init__(self, dim: int, num_blocks: int = 4, dropout: float = 0.1,
                 ffn_hidden: Optional[int] = None, activation: str = 'relu',
                 num_features: int = 16):
        super().__init__()
        self.kernel = CausalKernel(dim, num_features, activation=activation)
        self.fusion = ChunkedMLP(dim, num_blocks, activation)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_hidden, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def filter(self, x: Tensor) -> Tensor:
        r""":math:`\tilde S = \mathrm{MLP}_{\text{chunked}}(k * S)` (``[B, L, d]``)."""
        # float32 under torch.autocast (--amp), as the paper's filter: no bfloat16 FFT on CPU
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            return self.fusion(causal_convolution(x, self.kernel(x.size(1))))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, last_only: bool = False
                ) -> Tensor:
        """``x`` ``[B, L, d]`` -> ``[B, L, d]`` (position ``t`` reads positions ``<= t``);
        with ``last_only`` the last position ``[B, d]``, equal to ``forward(x)[:, -1]``."""
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        if last_only:
            filtered = self.filter(x)[:, -1]
            x = x[:, -1]
            mask = None if mask is None else mask[:, -1]
        else:
            filtered = self.filter(x)
        h = self.norm1(x + self.dropout(filtered))
        out = self.norm2(h + self.dropout(self.ffn(h)))
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out


class SelfAttentionLayer(nn.Module):
    r""":class:`EfficientFilterLayer` with the filter :math:`\mathcal F^{-1}(\mathrm{MLP}(
    \mathcal F(S)))` (eq 2-3) replaced by bidirectional multi-head self-attention, everything
    else unchanged -- the "attention block" of DPCPL table 5's "w/o DS":

    .. math::
        \tilde S = \mathrm{MHSA}(S, S, S),\quad
        H = \mathrm{LN}(S + \mathrm{Drop}(\tilde S)),\quad
        \mathrm{out} = \mathrm{LN}(H + \mathrm{Drop}(\mathrm{FFN}(H)))

    The attention is :class:`~mbgraph_seq.nn.transformer.MultiHeadSelfAttention` (SASRec's).
    It is *bidirectional*, as the filter is: every real position (``mask`` True) attends to
    every real position, earlier or later, and to nothing else; padding positions are zeroed
    on input and output, like the filter layer's.

    Args:
        dim: channels ``d``.
        num_heads: attention heads (divides ``d``).
        dropout: dropout on the attention weights, after the attention and in/after the FFN.
        ffn_hidden: FFN hidden width (default ``d``).
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.1,
                 ffn_hidden: Optional[int] = None):
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_hidden, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, last_only: bool = False
                ) -> Tensor:
        """``x`` ``[B, L, d]`` -> ``[B, L, d]``; with ``last_only`` only the last position's
        output ``[B, d]`` is computed (its query still attends to every real position, so the
        result equals ``forward(x)[:, -1]``)."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        x = x * mask.unsqueeze(-1).to(x.dtype)
        allowed = bidirectional_attention_mask(mask)                        # [B, 1, L, L]
        if last_only:
            attended = self.attn(x[:, -1:], x, allowed[:, :, -1:])[:, 0]
            x, mask = x[:, -1], mask[:, -1]
        else:
            attended = self.attn(x, x, allowed)
        h = self.norm1(x + self.dropout(attended))
        out = self.norm2(h + self.dropout(self.ffn(h)))
        return out * mask.unsqueeze(-1).to(out.dtype)


class BehaviorMinerLayer(nn.Module):
    r"""One EBM layer (DPCPL sec. 4.2, "Next, to enhance ..."): the overall sequence and the
    sub-sequence of each of the ``K`` behaviors pass an :class:`EfficientFilterLayer`; a fully
    connected behavior mixer combines the ``K + 1`` filtered views position by position:

    .. math::
        H' = \mathrm{LN}\big(F(H) + \mathrm{Drop}(W_{mix}[F(H) \,\|\, F(H \odot m_1) \,\|\,
        \dots \,\|\, F(H \odot m_K)] + b_{mix})\big)

    where :math:`m_k` keeps the positions of behavior ``k`` (and any always-kept positions such
    as prompt tokens) in place, so that all views stay aligned in time.

    With ``sequence_mixer='attention'`` (DPCPL table 5's "w/o DS") :math:`F` is a
    :class:`SelfAttentionLayer` instead: in view ``k`` a position attends to the positions
    :math:`m_k` keeps, so the views and the behavior mixer are the same as with the filter.

    Args:
        dim: channels.
        num_behaviors: ``K``.
        num_blocks, dropout, ffn_hidden, activation: of the filter layer; with
            ``sequence_mixer='attention'``, ``num_blocks`` is the number of attention heads
            (the paper likens the ``k`` chunks to ``k``-head attention) and ``activation``
            is unused.
        sequence_mixer: ``'filter'`` (:class:`EfficientFilterLayer`, attribute ``filter``),
            ``'attention'`` (:class:`SelfAttentionLayer`, attribute ``attention``) or
            ``'causal_filter'`` (:class:`CausalFilterLayer`, attribute ``causal_filter``; not
            in the paper). With the causal filter the layer is causal: the behavior views are
            masks in place and the mixer works position by position.
    """

    def __init__(self, dim: int, num_behaviors: int, num_blocks: int = 4, dropout: float = 0.1,
                 ffn_hidden: Optional[int] = None, activation: str = 'relu',
                 sequence_mixer: str = 'filter'):
        super().__init__()
        check_sequence_mixer(sequence_mixer)
        self.num_behaviors = int(num_behaviors)
        self.sequence_mixer = sequence_mixer
        # reading taken: one filter layer (shared weights) filters the overall sequence and
        # every behavior's sub-sequence; the mixer is a single Linear((K+1)d -> d)
        if sequence_mixer == 'filter':
            self.filter = EfficientFilterLayer(dim, num_blocks, dropout, ffn_hidden, activation)
        elif sequence_mixer == 'causal_filter':
            self.causal_filter = CausalFilterLayer(dim, num_blocks, dropout, ffn_hidden,
                                                   activation)
        else:
            self.attention = SelfAttentionLayer(dim, num_blocks, dropout, ffn_hidden)
        self.mixer = nn.Linear((self.num_behaviors + 1) * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def sequence_layer(self) -> nn.Module:
        """The layer that mixes the positions of each view (``filter``, ``causal_filter`` or
        ``attention``, by ``sequence_mixer``)."""
        return getattr(self, self.sequence_mixer)

    def forward(self, x: Tensor, behaviors: Tensor, mask: Tensor,
                keep: Optional[Tensor] = None, last_only: bool = False) -> Tensor:
        """``x`` ``[B, L, d]``, ``behaviors`` ``[B, L]`` (index + 1, 0 = none), ``mask``
        ``[B, L]`` real positions, ``keep`` ``[B, L]`` positions in every sub-sequence.
        Returns ``[B, L, d]``, or the last position ``[B, d]`` with ``last_only``."""
        B, L, d = x.shape
        masks = [mask] + [(behaviors == k + 1) & mask for k in range(self.num_behaviors)]
        if keep is not None:
            masks = [m | keep for m in masks]
        stacked = torch.stack(masks, 0).reshape(-1, L)                       # [(K+1) B, L]
        present = stacked.any(1)
        if bool(present.all()):
            views = x.unsqueeze(0) * stacked.view(-1, B, L, 1).to(x.dtype)   # [K+1, B, L, d]
            filtered = self.sequence_layer(views.reshape(-1, L, d), stacked, last_only)
        else:
            # a view without a position (a behavior absent from a sequence) comes out of the
            # sequence layer as zeros, which it zeroes where its mask is False: only the
            # others are computed (exact; on ml-latest-small's all-cuts batches a quarter
            # of the views are empty, the 'tag' view in 94% of the sequences)
            rows = present.nonzero().squeeze(1)
            kept = stacked.index_select(0, rows)
            views = x.index_select(0, rows % B) * kept.unsqueeze(-1).to(x.dtype)
            part = self.sequence_layer(views, kept, last_only)
            filtered = part.new_zeros((stacked.size(0),) + part.shape[1:]).index_copy(
                0, rows, part)
        real = masks[0][:, -1] if last_only else masks[0]
        filtered = filtered.view(self.num_behaviors + 1, B, *filtered.shape[1:])
        overall = filtered[0] * real.unsqueeze(-1).to(x.dtype)
        # every view's output is read at every real position (the mixer sees each behavior's
        # filtered context at each time step); only padding is zeroed
        views_last = filtered.movedim(0, -2)                       # [B, (L,) K+1, d]
        mixed = self.mixer(views_last.reshape(*views_last.shape[:-2], -1))
        out = self.norm(overall + self.dropout(mixed))
        return out * real.unsqueeze(-1).to(out.dtype)


__all__ = ['SEQUENCE_MIXERS', 'CAUSAL_MIXERS', 'check_sequence_mixer', 'ChunkedComplexMLP',
           'FeedForward', 'EfficientFilterLayer', 'DFT_MATMUL_MAX_LENGTH', 'real_dft_matrices',
           'lag_features', 'CausalKernel',
           'causal_convolution', 'ChunkedMLP', 'CausalFilterLayer', 'SelfAttentionLayer',
           'BehaviorMinerLayer']
