"""Lazy reconstructions of a CNMF result: ``A ⊗ C``, ``b ⊗ f`` and the residuals ``Y - A⊗C - b⊗f``.

CNMF-E's ring model (``nb=0``) has no ``b ⊗ f``: :class:`LazyArrayRingBackground` computes its
background ``b0 + up(W · ds(Y - A·C - b0))`` frame by frame from the movie.

A frame is a matrix product ``spatial @ temporal[:, t]``, so only the frames asked for are ever
computed, each in O(nnz(A) + pixels). The spatial factor is re-ordered once from CaImAn's Fortran
pixel order to C order, so the product lands directly as (y, x) frames.

Windowed projections (what a viewer's "mean over 10 frames" slider asks for) use linearity
where it is exact: ``mean_t(A C[:, w]) = A mean_t(C[:, w])`` costs one matrix-vector product
instead of ``len(w)`` of them; other functions compute the window's frames and reduce them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse

from .base import LazyArray

__all__ = [
    "LazyArrayRCB",
    "LazyArrayRCM",
    "LazyArrayResiduals",
    "LazyArrayRingBackground",
    "reduce_window",
    "ring_ssub",
    "window_bounds",
]

WindowFunc = str | Callable[..., np.ndarray]
_F32 = np.float32
# frames computed per chunk when streaming over the whole movie (~64 MB of float32 per chunk)
_CHUNK_ELEMENTS = 1 << 24


def window_bounds(t: int, size: int, n_frames: int, edge: str = "clip") -> tuple[int, int]:
    """Frames ``[start, stop)`` of the window of ``size`` frames centred on ``t``.

    The window is ``t - size // 2 .. t - size // 2 + size - 1`` (odd sizes are symmetric; even
    sizes have one more frame before ``t``). At the ends, ``edge="clip"`` drops the frames
    outside the movie, ``edge="shift"`` slides the window inside so it keeps ``size`` frames.
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    if not 0 <= t < n_frames:
        raise IndexError(f"frame index {t} is out of range for a movie of {n_frames} frames")
    start = t - size // 2
    stop = start + size
    if edge == "clip":
        return max(start, 0), min(stop, n_frames)
    if edge == "shift":
        if size >= n_frames:
            return 0, n_frames
        start = min(max(start, 0), n_frames - size)
        return start, start + size
    raise ValueError(f"edge must be 'clip' or 'shift', got {edge!r}")


def _fortran_to_c_perm(dims: tuple[int, int]) -> np.ndarray:
    """perm[q] = p: the Fortran pixel index of the C-order pixel q = row * d2 + col."""
    d1, d2 = dims
    return np.arange(d1 * d2, dtype=np.int64).reshape(d2, d1).T.ravel()


def reduce_window(frames: np.ndarray, func: WindowFunc) -> np.ndarray:
    """(n, y, x) frames reduced along time to one float32 image; mean and std are summed in
    float64. The one definition of the window functions, for lazy arrays and viewers alike."""
    if callable(func):
        out = func(frames, axis=0)
    elif func == "mean":
        out = frames.mean(axis=0, dtype=np.float64)
    elif func == "max":
        out = frames.max(axis=0)
    elif func == "min":
        out = frames.min(axis=0)
    elif func == "std":
        out = frames.std(axis=0, dtype=np.float64)
    elif func == "median":
        out = np.median(frames, axis=0)
    else:
        raise ValueError(f"window func must be 'mean', 'max', 'min', 'std', 'median' or a callable, got {func!r}")
    return np.asarray(out, dtype=_F32)


class _Projections:
    """Mean/max/min/std images of a lazy movie, computed once by streaming over its frames."""

    _images: dict[str, np.ndarray]

    def _frame_chunks(self) -> Any:
        n = self.n_frames  # type: ignore[attr-defined]
        pixels = int(np.prod(self.shape[1:]))  # type: ignore[attr-defined]
        step = max(1, _CHUNK_ELEMENTS // max(pixels, 1))
        for start in range(0, n, step):
            yield self._read_range(start, min(n, start + step))  # type: ignore[attr-defined]

    def _exact_mean(self) -> np.ndarray:
        total = np.zeros(self.shape[1:], dtype=np.float64)  # type: ignore[attr-defined]
        for chunk in self._frame_chunks():
            total += chunk.sum(axis=0, dtype=np.float64)
        return total / max(self.n_frames, 1)  # type: ignore[attr-defined]

    def _stream_stats(self) -> None:
        if self.n_frames == 0:  # type: ignore[attr-defined]
            raise ValueError("projections of an empty movie")
        mean = self.mean_image.astype(np.float64)
        sq = np.zeros_like(mean)
        hi = np.full(mean.shape, -np.inf, dtype=_F32)
        lo = np.full(mean.shape, np.inf, dtype=_F32)
        for chunk in self._frame_chunks():
            d = chunk - mean  # centred on the exact mean: a stable one-pass variance
            sq += np.einsum("tij,tij->ij", d, d)
            np.maximum(hi, chunk.max(axis=0), out=hi)
            np.minimum(lo, chunk.min(axis=0), out=lo)
        self._images["std"] = np.sqrt(sq / self.n_frames).astype(_F32)  # type: ignore[attr-defined]
        self._images["max"] = hi
        self._images["min"] = lo

    @property
    def mean_image(self) -> np.ndarray:
        """Per-pixel mean over all frames (exact; computed once; a property as in mesmerize-core)."""
        if "mean" not in self._images:
            self._images["mean"] = self._compute_mean_image().astype(_F32)
        return self._images["mean"]

    def _compute_mean_image(self) -> np.ndarray:
        return self._exact_mean()

    @property
    def max_image(self) -> np.ndarray:
        """Per-pixel maximum over all frames (streamed once, then cached)."""
        if "max" not in self._images:
            self._stream_stats()
        return self._images["max"]

    @property
    def min_image(self) -> np.ndarray:
        """Per-pixel minimum over all frames (streamed once, then cached)."""
        if "min" not in self._images:
            self._stream_stats()
        return self._images["min"]

    @property
    def std_image(self) -> np.ndarray:
        """Per-pixel (population) standard deviation over all frames (streamed once, cached)."""
        if "std" not in self._images:
            self._stream_stats()
        return self._images["std"]


class _Factorized(_Projections, LazyArray):
    """``spatial @ temporal`` as a (T, d1, d2) movie; spatial in CaImAn's Fortran pixel order."""

    def __init__(
        self,
        spatial: Any,
        temporal: np.ndarray,
        dims: tuple[int, ...],
        component_indices: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if len(dims) != 2:
            raise ValueError(f"only 2-D frames are supported, got dims {dims}")
        n_pix = dims[0] * dims[1]
        if spatial.ndim != 2 or spatial.shape[0] != n_pix:
            raise ValueError(f"spatial has shape {spatial.shape}, expected ({n_pix}, K) for dims {dims}")
        temporal = np.asarray(temporal)
        if temporal.ndim != 2:
            raise ValueError(f"temporal must be (K, T), got shape {temporal.shape}")
        if spatial.shape[1] != temporal.shape[0]:
            raise ValueError(
                f"number of temporal components ({temporal.shape[0]}) does not equal the "
                f"number of spatial components ({spatial.shape[1]})"
            )
        if component_indices is not None:
            component_indices = np.asarray(component_indices, dtype=np.int64).ravel()
            K = spatial.shape[1]
            if component_indices.size and (
                component_indices.min() < -K or component_indices.max() >= K
            ):
                raise IndexError(f"component indices out of range for {K} components")
            component_indices = np.where(component_indices < 0, component_indices + K, component_indices)
            spatial = spatial[:, component_indices]
        perm = _fortran_to_c_perm(dims)  # rows re-ordered so products come out as (y, x)
        if scipy.sparse.issparse(spatial):
            # CSC: a product scatters each component's pixels, cheaper than visiting every row
            self._spatial = scipy.sparse.csr_matrix(spatial).astype(_F32)[perm].tocsc()
            self._spatial.sort_indices()
        else:
            self._spatial = np.ascontiguousarray(np.asarray(spatial, dtype=_F32)[perm])
        self._temporal = temporal  # never copied: windows are sliced from it
        self._cidx = component_indices
        self.dims = dims
        self._shape = (temporal.shape[1], *dims)
        self._dtype = np.dtype(_F32)
        self._images = {}

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        return int(self._spatial.shape[1])

    def _describe(self) -> str:
        return f"n_components={self.n_components}"

    # -- core products -------------------------------------------------------------------------
    def _temporal_cols(self, cols: np.ndarray | slice) -> np.ndarray:
        """temporal[components, cols] as float32, (k, n)."""
        if self._cidx is None:
            out = self._temporal[:, cols]
        elif isinstance(cols, slice):
            out = self._temporal[self._cidx, cols]
        else:
            out = self._temporal[np.ix_(self._cidx, cols)]
        return np.asarray(out, dtype=_F32)

    def _product(self, X: np.ndarray) -> np.ndarray:
        """spatial @ X for X (k, n): (pixels, n) float32."""
        return np.asarray(self._spatial @ X, dtype=_F32)

    def _frames_from(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[1]
        if self.n_components == 0:
            return np.zeros((n, *self.dims), dtype=_F32)
        if n == 1:
            return self._product(X[:, 0]).reshape(1, *self.dims)
        return np.ascontiguousarray(self._product(X).T).reshape(n, *self.dims)

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        return self._frames_from(self._temporal_cols(indices))

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self._frames_from(self._temporal_cols(slice(start, stop)))

    def _image_from(self, v: np.ndarray) -> np.ndarray:
        """spatial @ v for a (k,) vector, as a (y, x) image."""
        if self.n_components == 0:
            return np.zeros(self.dims, dtype=_F32)
        return self._product(np.asarray(v, dtype=_F32)).reshape(self.dims)

    def _compute_mean_image(self) -> np.ndarray:
        if self.n_frames == 0:
            raise ValueError("projections of an empty movie")
        k = self.n_components
        sums = np.zeros(k, dtype=np.float64)
        step = max(1, _CHUNK_ELEMENTS // max(k, 1))
        for start in range(0, self.n_frames, step):
            sums += self._temporal_cols(slice(start, start + step)).sum(axis=1, dtype=np.float64)
        return self._image_from(sums / self.n_frames)

    def window(self, t: int, size: int, func: WindowFunc = "mean", *, edge: str = "clip") -> np.ndarray:
        """The ``func`` projection of the ``size`` frames centred on ``t`` (see window_bounds).

        "mean" is exact and costs one product with the window's mean trace; other functions
        (and callables ``func(frames, axis=0)``) reduce the window's computed frames.
        """
        start, stop = window_bounds(int(t), int(size), self.n_frames, edge)
        if func == "mean":
            cols = self._temporal_cols(slice(start, stop))
            return self._image_from(cols.mean(axis=1, dtype=np.float64))
        return reduce_window(self._read_range(start, stop), func)


class LazyArrayRCM(_Factorized):
    """The reconstructed movie ``A ⊗ C`` (no background), shape (T, d1, d2), float32.

    ``spatial`` is CaImAn's A (pixels x K, Fortran pixel order, sparse or dense), ``temporal``
    its C (K x T) or any (K x T) replacement (dF/F, z-scores); ``component_indices`` keeps a
    subset of the K components without copying C.
    """

    def __init__(
        self,
        spatial: Any,
        temporal: np.ndarray,
        frame_dims: tuple[int, ...],
        component_indices: np.ndarray | None = None,
    ) -> None:
        super().__init__(spatial, temporal, frame_dims, component_indices)


class LazyArrayRCB(_Factorized):
    """The reconstructed background ``b ⊗ f``, shape (T, d1, d2), float32 (b: pixels x nb)."""

    def __init__(self, spatial: Any, temporal: np.ndarray, frame_dims: tuple[int, ...]) -> None:
        if spatial is None or temporal is None:
            raise ValueError("the background needs both b and f (this result has none)")
        spatial = spatial if scipy.sparse.issparse(spatial) else np.asarray(spatial)
        temporal = np.asarray(temporal)
        if spatial.ndim == 1:
            spatial = spatial[:, None]
        if temporal.ndim == 1:
            temporal = temporal[None, :]
        super().__init__(spatial, temporal, frame_dims)


def ring_ssub(dims: tuple[int, int], n_ds: int, hint: int | None = None) -> int:
    """The factor ``s`` whose grid ``((d1 - 1) // s + 1, (d2 - 1) // s + 1)`` has ``n_ds`` pixels.

    ``hint`` (the params' ``ssub_B``) when it fits, else CaImAn's ``round(sqrt(P / n_ds))``,
    else the smallest factor that fits; ValueError when none does.
    """
    d1, d2 = (int(d) for d in dims)

    def fits(s: int) -> bool:
        return s >= 1 and ((d1 - 1) // s + 1) * ((d2 - 1) // s + 1) == n_ds

    guess = int(round(np.sqrt(d1 * d2 / max(n_ds, 1))))
    for s in (hint, guess, *range(1, max(d1, d2) + 1)):
        if s is not None and fits(int(s)):
            return int(s)
    raise ValueError(f"W has {n_ds} rows: no downsampling factor of the {d1}x{d2} frame gives that grid")


class LazyArrayRingBackground(_Projections, LazyArray):
    """CNMF-E's ring-model background (``nb=0``), shape (T, d1, d2), float32.

    As CaImAn's ``Estimates.compute_background``: ``B_t = b0 + up(W · (ds(Y_t - A·C_t) - ds(b0)))``
    where ``ds`` averages ``ssub`` x ``ssub`` pixel blocks (partial blocks at the bottom/right
    edges average the pixels they have), ``W`` (P_ds x P_ds) acts on that grid in Fortran pixel
    order, ``up`` repeats each grid value over its block, and ``b0`` is full resolution
    (Fortran order). ``rcm`` is the ``A ⊗ C`` of all components; ``raw_movie`` is Y (t, y, x).
    A frame reads one movie frame and costs O(nnz(A) + nnz(W) + pixels).
    """

    def __init__(
        self, W: Any, b0: np.ndarray, raw_movie: Any, rcm: LazyArrayRCM, ssub: int | None = None
    ) -> None:
        super().__init__()
        if not scipy.sparse.issparse(W) or W.shape[0] != W.shape[1] or W.shape[0] == 0:
            raise ValueError(f"W must be a square, non-empty sparse matrix, got {type(W).__name__} {np.shape(W)}")
        d1, d2 = rcm.dims
        b0 = np.asarray(b0, dtype=_F32).ravel()
        if b0.size != d1 * d2:
            raise ValueError(f"b0 has {b0.size} values, expected {d1 * d2} for dims {rcm.dims}")
        shape = tuple(raw_movie.shape)
        if shape != tuple(rcm.shape):
            raise ValueError(f"movie shape {shape} does not match the reconstruction {rcm.shape}")
        if ssub is None:
            s = ring_ssub((d1, d2), W.shape[0])
        else:
            s = int(ssub)
            if ring_ssub((d1, d2), W.shape[0], s) != s:
                raise ValueError(f"ssub={s} does not give W's grid of {W.shape[0]} pixels for dims {rcm.dims}")
        self.ssub = s
        self.ds_dims = ((d1 - 1) // s + 1, (d2 - 1) // s + 1)
        perm = _fortran_to_c_perm(self.ds_dims)  # W re-indexed to C order on the grid
        self._W = scipy.sparse.csr_matrix(W)[perm][:, perm].astype(_F32).tocsr()
        self._W.sort_indices()
        self._rows = np.arange(0, d1, s)  # block starts, for np.add.reduceat
        self._cols = np.arange(0, d2, s)
        counts = np.minimum(s, d1 - self._rows)[:, None] * np.minimum(s, d2 - self._cols)[None, :]
        self._inv_counts = (1.0 / counts).astype(_F32)
        self._up_rows = np.arange(d1) // s
        self._up_cols = np.arange(d2) // s
        self._b0 = np.ascontiguousarray(b0.reshape(d2, d1).T)  # (y, x)
        self._b0_ds = self._downsample(self._b0[None])[0]
        self._movie = raw_movie
        self._rcm = rcm
        self.dims = rcm.dims
        self._shape = shape
        self._dtype = np.dtype(_F32)
        self._images = {}

    @property
    def movie(self) -> Any:
        return self._movie

    @property
    def rcm(self) -> LazyArrayRCM:
        return self._rcm

    def _describe(self) -> str:
        return f"ssub={self.ssub}, nnz(W)={self._W.nnz}"

    # -- the model ------------------------------------------------------------------------------
    def _downsample(self, x: np.ndarray) -> np.ndarray:
        """Block means of (n, d1, d2) frames on the ssub grid, (n, d1s, d2s)."""
        if self.ssub == 1:
            return x
        x = np.add.reduceat(np.add.reduceat(x, self._rows, axis=1), self._cols, axis=2)
        x *= self._inv_counts
        return x

    def _upsample(self, z: np.ndarray) -> np.ndarray:
        if self.ssub == 1:
            return z
        return np.take(np.take(z, self._up_rows, axis=1), self._up_cols, axis=2)

    def _background(self, movie_frames: Any, model_frames: np.ndarray) -> np.ndarray:
        """``b0 + up(W · ds(Y - A·C - b0))`` for frames Y and A·C (n, d1, d2)."""
        x = np.subtract(np.asarray(movie_frames), model_frames, dtype=_F32)
        xd = self._downsample(x)
        xd -= self._b0_ds
        n = xd.shape[0]
        fluct = np.asarray(self._W @ xd.reshape(n, -1).T, dtype=_F32).T.reshape(n, *self.ds_dims)
        out = np.ascontiguousarray(self._upsample(fluct))  # a fresh buffer either way
        out += self._b0
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self._background(self._movie[start:stop], self._rcm._read_range(start, stop))

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        return self._background(self._movie[indices], self._rcm._read_frames(indices))

    def _compute_mean_image(self) -> np.ndarray:
        if self.n_frames == 0:
            raise ValueError("projections of an empty movie")
        return self._background(_movie_mean(self._movie, 0, self.n_frames)[None], self._rcm.mean_image[None])[0]

    def window(self, t: int, size: int, func: WindowFunc = "mean", *, edge: str = "clip") -> np.ndarray:
        """Like :meth:`LazyArrayRCM.window`; "mean" is exact by linearity: the model of the mean frame."""
        start, stop = window_bounds(int(t), int(size), self.n_frames, edge)
        if func == "mean":
            mean_ac = self._rcm.window(t, size, "mean", edge=edge)
            return self._background(_movie_mean(self._movie, start, stop)[None], mean_ac[None])[0]
        return reduce_window(self._read_range(start, stop), func)


def _movie_mean(movie: Any, start: int, stop: int) -> np.ndarray:
    """Mean of frames ``start:stop`` of a (t, y, x) array-like, streamed in chunks (float64)."""
    shape = tuple(movie.shape[1:])
    total = np.zeros(shape, dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(int(np.prod(shape)), 1))
    for a in range(start, stop, step):
        total += np.asarray(movie[a : min(stop, a + step)]).sum(axis=0, dtype=np.float64)
    return total / max(stop - start, 1)


class LazyArrayResiduals(_Projections, LazyArray):
    """The residuals ``Y - A⊗C - B`` of a movie ``Y`` (any (T, y, x) array-like), float32.

    ``B`` is ``b⊗f`` (:class:`LazyArrayRCB`), the ring model (:class:`LazyArrayRingBackground`)
    or None. A ring background built on the same movie and ``rcm`` objects shares their frames:
    each residual frame reads Y and computes A·C once.
    """

    def __init__(
        self, raw_movie: Any, rcm: LazyArrayRCM, rcb: LazyArrayRCB | LazyArrayRingBackground | None
    ) -> None:
        super().__init__()
        shape = tuple(raw_movie.shape)
        if shape != tuple(rcm.shape) or (rcb is not None and shape != tuple(rcb.shape)):
            raise ValueError(
                f"movie shape {shape} does not match the reconstruction "
                f"{rcm.shape}" + ("" if rcb is None else f" / background {rcb.shape}")
            )
        self._movie = raw_movie
        self._rcm = rcm
        self._rcb = rcb
        self._ring = rcb if (
            isinstance(rcb, LazyArrayRingBackground) and rcb.movie is raw_movie and rcb.rcm is rcm
        ) else None
        self.dims = rcm.dims
        self._shape = shape
        self._dtype = np.dtype(_F32)
        self._images = {}

    @property
    def rcm(self) -> LazyArrayRCM:
        return self._rcm

    @property
    def rcb(self) -> LazyArrayRCB | LazyArrayRingBackground | None:
        return self._rcb

    def _residual(self, movie_frames: Any, model: np.ndarray) -> np.ndarray:
        # model is our own buffer: subtract in place, converting the movie's dtype on the fly
        np.subtract(np.asarray(movie_frames), model, out=model, casting="unsafe")
        return model

    def _frames(self, movie_frames: Any, rcm_frames: np.ndarray, rcb_frames: Callable[[], np.ndarray]) -> np.ndarray:
        if self._ring is not None:
            movie_frames = np.asarray(movie_frames)
            rcm_frames += self._ring._background(movie_frames, rcm_frames)
        elif self._rcb is not None:
            rcm_frames += rcb_frames()
        return self._residual(movie_frames, rcm_frames)

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        rcb = self._rcb
        return self._frames(
            self._movie[start:stop], self._rcm._read_range(start, stop),
            lambda: rcb._read_range(start, stop),  # type: ignore[union-attr]
        )

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        rcb = self._rcb
        return self._frames(
            self._movie[indices], self._rcm._read_frames(indices),
            lambda: rcb._read_frames(indices),  # type: ignore[union-attr]
        )

    def _movie_window_mean(self, start: int, stop: int) -> np.ndarray:
        frames = np.asarray(self._movie[start:stop])
        acc = np.float64 if (stop - start > 64 or frames.dtype == np.float64) else _F32
        return frames.sum(axis=0, dtype=acc) / (stop - start)

    def _compute_mean_image(self) -> np.ndarray:
        # mean(Y) streamed over the movie; the model's mean by linearity
        mean_y = _movie_mean(self._movie, 0, self.n_frames)
        out = mean_y - self._rcm.mean_image
        if self._ring is not None:
            bg = self._ring._background(mean_y[None], self._rcm.mean_image[None])[0]
            self._ring._images.setdefault("mean", bg)
            out -= bg
        elif self._rcb is not None:
            out -= self._rcb.mean_image
        return out

    def window(self, t: int, size: int, func: WindowFunc = "mean", *, edge: str = "clip") -> np.ndarray:
        """Like :meth:`LazyArrayRCM.window`; "mean" is ``mean(Y[w])`` minus the model of the mean frame."""
        start, stop = window_bounds(int(t), int(size), self.n_frames, edge)
        if func == "mean":
            mean_y = np.asarray(self._movie_window_mean(start, stop), dtype=_F32)
            mean_ac = self._rcm.window(t, size, "mean", edge=edge)
            out = mean_y - mean_ac
            if self._ring is not None:
                out -= self._ring._background(mean_y[None], mean_ac[None])[0]
            elif self._rcb is not None:
                out -= self._rcb.window(t, size, "mean", edge=edge)
            return out
        return reduce_window(self._read_range(start, stop), func)
