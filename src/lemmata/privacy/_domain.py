"""Declared public domains of tables: encoding rows to codes and back."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lemmata.privacy._checks import check_int

__all__ = ["Domain"]


class Domain:
    r"""The public domain of a table, declared before any private data is read.

    Each column is either categorical, with its list of values, or numeric, with
    public bounds :math:`[a, b]` cut into ``n_bins`` equal-width bins. Every
    column is encoded as integer codes :math:`0, \dots, d_j - 1`; numeric values
    outside the bounds are clipped into the first or last bin.

    Parameters
    ----------
    categorical : mapping of str to sequence, optional
        Column name to its allowed values.
    numeric : mapping of str to (low, high, n_bins), optional
        Column name to its public bounds and bin count (``low < high``,
        ``n_bins >= 1``).
    other : mapping of str to value, optional
        For a categorical column, a declared value (one of its categories) onto
        which values outside the domain are mapped. Without it such values
        raise ``ValueError``.

    Notes
    -----
    Bins come from declared bounds, never from the data: bins fitted on private
    data would leak. Decoding a numeric code gives the bin's midpoint.
    """

    def __init__(
        self,
        categorical: Mapping[str, Sequence] | None = None,
        numeric: Mapping[str, tuple[float, float, int]] | None = None,
        other: Mapping[str, object] | None = None,
    ) -> None:
        self.categorical = {k: list(v) for k, v in (categorical or {}).items()}
        self.numeric = {k: tuple(v) for k, v in (numeric or {}).items()}
        self.other = dict(other or {})
        both = set(self.categorical) & set(self.numeric)
        if both:
            raise ValueError(f"columns declared twice: {sorted(both)}")
        if not self.categorical and not self.numeric:
            raise ValueError("a Domain needs at least one column; got none")
        for name, values in self.categorical.items():
            if len(values) < 1 or len(set(values)) != len(values):
                raise ValueError(
                    f"categories of {name!r} must be non-empty and distinct; "
                    f"got {values!r}"
                )
        for name, spec in self.numeric.items():
            if len(spec) != 3:
                raise ValueError(
                    f"numeric[{name!r}] must be (low, high, n_bins); got {spec!r}"
                )
            low, high, n_bins = spec
            check_int(f"n_bins of {name!r}", n_bins, 1)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"bounds of {name!r} must be finite with low < high; "
                    f"got ({low!r}, {high!r})"
                )
        for name, value in self.other.items():
            if value not in self.categorical.get(name, []):
                raise ValueError(
                    f"other[{name!r}] must be one of the declared categories of "
                    f"{name!r}; got {value!r}"
                )
        self.columns = list(self.categorical) + list(self.numeric)

    @property
    def sizes(self) -> list[int]:
        """The number of codes :math:`d_j` of each column, in ``columns`` order."""
        return [
            len(self.categorical[c]) if c in self.categorical else self.numeric[c][2]
            for c in self.columns
        ]

    def subset(self, columns: Sequence[str]) -> Domain:
        """The domain restricted to ``columns``."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ValueError(f"columns not in the domain: {missing}")
        return Domain(
            {c: self.categorical[c] for c in columns if c in self.categorical},
            {c: self.numeric[c] for c in columns if c in self.numeric},
            {c: v for c, v in self.other.items() if c in columns},
        )

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """Codes of shape (n_rows, n_columns); raise on values outside the domain."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}")
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise ValueError(f"df lacks the declared columns {missing}")
        codes = np.empty((len(df), len(self.columns)), dtype=np.int64)
        for j, col in enumerate(self.columns):
            codes[:, j] = self._encode_column(col, df[col])
        return codes

    def _encode_column(self, col: str, values: pd.Series) -> np.ndarray:
        if col in self.numeric:
            low, high, n_bins = self.numeric[col]
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            if np.isnan(x).any():
                raise ValueError(f"column {col!r} has missing or non-numeric values")
            idx = np.floor((x - low) / (high - low) * n_bins)
            return np.clip(idx, 0, n_bins - 1).astype(np.int64)
        cats = self.categorical[col]
        lookup = {v: i for i, v in enumerate(cats)}
        codes = values.map(lookup)
        unseen = values[codes.isna()]
        if len(unseen):
            if col not in self.other:
                raise ValueError(
                    f"column {col!r} has values outside its declared categories "
                    f"{cats!r}: {sorted(map(str, unseen.unique()))[:5]}"
                )
            codes = codes.fillna(lookup[self.other[col]])
        return codes.to_numpy(dtype=np.int64)

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        """The table of values for codes of shape (n_rows, n_columns)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.columns):
            raise ValueError(
                f"codes must have shape (n, {len(self.columns)}); got {codes.shape}"
            )
        sizes = np.array(self.sizes)
        if codes.size and ((codes < 0).any() or (codes >= sizes).any()):
            raise ValueError("codes must lie in [0, size) for every column")
        out = {}
        for j, col in enumerate(self.columns):
            if col in self.numeric:
                low, high, n_bins = self.numeric[col]
                width = (high - low) / n_bins
                out[col] = low + (codes[:, j] + 0.5) * width
            else:
                out[col] = np.asarray(self.categorical[col], dtype=object)[codes[:, j]]
        return pd.DataFrame(out, columns=self.columns)

    def one_hot(self, df: pd.DataFrame) -> np.ndarray:
        """One-hot features of shape (n_rows, sum of sizes) over the declared domain.

        The columns are fixed by the domain, so every table (real or synthetic,
        whatever categories it happens to contain) maps to the same features.
        """
        codes = self.encode(df)
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        out = np.zeros((len(df), int(sum(self.sizes))))
        rows = np.arange(len(df))
        for j in range(len(self.columns)):
            out[rows, offsets[j] + codes[:, j]] = 1.0
        return out
