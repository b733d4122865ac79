"""Safe unpickling of dataset files: only scipy CSR / COO matrices and numpy arrays load."""
from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np

from ._base import PathLike


class RestrictedUnpicklingError(pickle.UnpicklingError):
    """A pickle referenced something other than the scipy/numpy types a dataset file may hold."""


def _numpy_attr(name: str, submodule: str = 'multiarray'):
    """``numpy._core.<submodule>.<name>`` (numpy >= 2) or ``numpy.core.<submodule>.<name>``."""
    for module in (f'numpy._core.{submodule}', f'numpy.core.{submodule}'):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f'numpy has no {submodule}.{name}')


def _latin1_encode(obj, encoding='utf-8', errors='strict'):
    """Stand-in for ``_codecs.encode`` limited to what protocol-2 pickles of ``bytes`` use:
    ``encode(text, 'latin1')``."""
    if not isinstance(obj, str) or str(encoding).lower().replace('_', '-') not in (
            'latin1', 'latin-1', 'iso-8859-1'):
        raise RestrictedUnpicklingError(
            f'refused _codecs.encode with encoding {encoding!r}: only latin1 text is allowed')
    return obj.encode('latin1', errors)


def _bytes(*args):
    """Stand-in for ``bytes`` as protocol-2 pickles call it: ``bytes()`` for an empty buffer
    (scipy's empty matrices pickle their data that way); nothing else."""
    if args and not (len(args) == 1 and isinstance(args[0], (bytes, bytearray))):
        raise RestrictedUnpicklingError(f'refused bytes{tuple(type(a).__name__ for a in args)}: '
                                        'only bytes() of an empty buffer is allowed')
    return bytes(*args)


def _allowed_globals() -> Dict[Tuple[str, str], Callable]:
    import scipy.sparse
    csr = scipy.sparse.csr_matrix
    coo = scipy.sparse.coo_matrix
    reconstruct = _numpy_attr('_reconstruct')
    scalar = _numpy_attr('scalar')
    frombuffer = _numpy_attr('_frombuffer', 'numeric')
    return {
        # the CSR class under its current and its pre-1.8 scipy module path
        ('scipy.sparse._csr', 'csr_matrix'): csr,
        ('scipy.sparse.csr', 'csr_matrix'): csr,
        # COO as well: the SSLRec toolkit's test_mat.pkl is one
        ('scipy.sparse._coo', 'coo_matrix'): coo,
        ('scipy.sparse.coo', 'coo_matrix'): coo,
        # numpy array (and array scalar) reconstruction, numpy >= 2 and older module paths
        ('numpy._core.multiarray', '_reconstruct'): reconstruct,
        ('numpy.core.multiarray', '_reconstruct'): reconstruct,
        ('numpy._core.multiarray', 'scalar'): scalar,
        ('numpy.core.multiarray', 'scalar'): scalar,
        # protocol 5 pickles of arrays: _frombuffer(bytes, dtype, shape, order)
        ('numpy._core.numeric', '_frombuffer'): frombuffer,
        ('numpy.core.numeric', '_frombuffer'): frombuffer,
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, 'latin1')
        # (the real taobao trn_pv does)
        ('_codecs', 'encode'): _latin1_encode,
        # ... and an empty bytes object as bytes() (scipy's empty matrices)
        ('__builtin__', 'bytes'): _bytes,
        ('builtins', 'bytes'): _bytes,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only scipy CSR / COO matrices and numpy arrays; any other global
    (``os.system``, ``builtins.eval``, ...) raises :class:`RestrictedUnpicklingError` naming
    it and the file, before anything is called."""

    def __init__(self, file, source: str = '<pickle>'):
        # latin1 lets numpy arrays written by Python 2 (str buffers) load; it does not change
        # how Python 3 pickles are read
        super().__init__(file, encoding='latin1')
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise RestrictedUnpicklingError(
                f'{self.source}: refused to unpickle {module}.{name}: dataset pickles may hold '
                'only scipy.sparse.csr_matrix / coo_matrix and numpy arrays')
        return obj


def safe_unpickle(path: PathLike):
    """Load ``path`` with :class:`RestrictedUnpickler` (scipy CSR / COO, numpy arrays, plain Python
    containers only)."""
    path = Path(path)
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        return RestrictedUnpickler(io.BytesIO(raw), source=str(path)).load()
    except RestrictedUnpicklingError:
        raise
    except Exception as e:  # truncated / corrupt files
        raise pickle.UnpicklingError(f'{path}: could not unpickle: {e!r}') from e
