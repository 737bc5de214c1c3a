"""Numeric inputs of the policy layer, checked once where they enter: finite vectors and
matrices, and covariance matrices that are square, symmetric and non-negative on the diagonal.
Each check names the input and the position that fails it (``PolicyError``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .errors import PolicyError

FloatArray = npt.NDArray[np.float64]


def finite_vector(
    name: str, values: npt.ArrayLike, *, labels: Sequence[str] | None = None
) -> FloatArray:
    """``values`` as a 1-d float array, refusing NaN and infinities by position or label."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise PolicyError(f"{name}: expected a vector, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        where = labels[int(bad[0])] if labels is not None else f"position {int(bad[0])}"
        raise PolicyError(f"{name}: {arr[bad[0]]} at {where} is not a finite number")
    return arr


def finite_matrix(name: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` as a 2-d float array without NaN or infinities."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise PolicyError(f"{name}: expected a matrix, got shape {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        i, j = (int(x) for x in bad[0])
        raise PolicyError(f"{name}: {arr[i, j]} at row {i}, column {j} is not a finite number")
    return arr


def covariance(name: str, values: npt.ArrayLike, n: int | None = None) -> FloatArray:
    """A finite, square, symmetric covariance matrix with a non-negative diagonal."""
    cov = finite_matrix(name, values)
    if cov.shape[0] != cov.shape[1]:
        raise PolicyError(f"{name}: a covariance matrix must be square, got shape {cov.shape}")
    if n is not None and cov.shape[0] != n:
        raise PolicyError(f"{name}: {cov.shape[0]} assets, expected {n}")
    scale = max(float(np.abs(cov).max()), 1e-300)
    if not np.allclose(cov, cov.T, rtol=1e-9, atol=1e-12 * scale):
        raise PolicyError(f"{name}: a covariance matrix must be symmetric")
    if np.any(np.diag(cov) < 0):
        raise PolicyError(f"{name}: variances on the diagonal must be >= 0")
    return cov
