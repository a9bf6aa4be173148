"""What both mcorr backends share: params with defaults, input checks, the shifts file.

Shifts file ``{uuid}_shifts.npy`` (as mesmerize-core saves CaImAn's attributes):

* rigid: ``(T, 2)`` float64, columns ``[dy, dx]`` (rows, cols) = ``MotionCorrect.shifts_rig``,
  the shift applied to register each frame (``registered(q) = frame(q - s)``);
* piecewise: ``(2, T, n_patches)`` float64 = ``[x_shifts_els, y_shifts_els]``; CaImAn's "x" is
  the first image axis (rows) and "y" the second (cols); patches in C order of the patch grid
  (row of patches after row of patches), the grid of
  :func:`~mesmerize_widgets.algorithms.mcorr.registration.patch_grid`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..context import RunContext
from ..images import SummaryAccumulator


def full_params(main: dict[str, Any]) -> dict[str, Any]:
    """The item's ``main`` params over the schema's defaults."""
    from . import SCHEMA

    out = {p.name: p.default for p in SCHEMA.params}
    out.update(main)
    return out


def crop_slices(indices, dims: tuple[int, int]) -> tuple[slice, slice]:
    if indices is None:
        return slice(None), slice(None)
    return tuple(slice(a, b) for a, b in indices)  # type: ignore[return-value]


def check_movie(movie: Any, p: dict[str, Any], name: str) -> tuple[tuple[slice, slice], tuple[int, int], int]:
    """Refuse, before any work, what would fail or give garbage later; returns (crop, dims, T).

    Messages name the param and the frame size, so the user knows what to change.
    """
    shape = tuple(int(v) for v in movie.shape)
    dtype = np.dtype(movie.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)) or dtype == np.bool_:
        raise ValueError(f"{name}: motion correction needs integer or float pixels, the movie is {dtype}")
    if len(shape) != 3:
        what = "a single image" if len(shape) == 2 else f"an array of shape {shape}"
        raise ValueError(
            f"{name}: motion correction needs a (frames, rows, cols) movie, got {what}"
            + (" (is3D / colour movies are not supported by the builtin backend)" if len(shape) > 3 else "")
        )
    if shape[0] < 2:
        raise ValueError(
            f"{name}: motion correction needs a movie of at least 2 frames, got a single {shape[1]}x{shape[2]} image"
        )
    crop = crop_slices(p.get("indices"), shape[1:])
    rows = range(shape[1])[crop[0]]
    cols = range(shape[2])[crop[1]]
    dims = (len(rows), len(cols))
    if min(dims) < 4:
        raise ValueError(f"indices {p.get('indices')} leave a {dims[0]}x{dims[1]} field of view of the "
                         f"{shape[1]}x{shape[2]} frames: too small to register")
    where = f"the {dims[0]}x{dims[1]} frame" + (" (after indices)" if p.get("indices") else "")
    ms = tuple(p["max_shifts"])[:2]
    limit = tuple((d - 1) // 2 for d in dims)
    if any(m > lim for m, lim in zip(ms, limit, strict=True)):
        raise ValueError(
            f"max_shifts {tuple(ms)} does not fit {where}: a shift must be at most {limit} "
            "(less than half the frame along each axis)"
        )
    if p["pw_rigid"]:
        st, ov = tuple(p["strides"])[:2], tuple(p["overlaps"])[:2]
        size = tuple(a + b for a, b in zip(st, ov, strict=True))
        if any(s > d for s, d in zip(size, dims, strict=True)):
            raise ValueError(
                f"strides {st} + overlaps {ov} make {size[0]}x{size[1]} patches, larger than {where}; "
                "choose smaller strides/overlaps or pw_rigid=False"
            )
    return crop, dims, shape[0]


def merge_summary(total: SummaryAccumulator, part: SummaryAccumulator) -> None:
    """Add a worker's partial sums (computed with the same reference frame) into ``total``."""
    if part.n == 0:
        return
    if total.n == 0:
        total._shift = part._shift
    total.n += part.n
    total._s1 += part._s1
    total._s2 += part._s2
    np.maximum(total._max, part._max, out=total._max)
    for a, b in zip(total._cross, part._cross, strict=True):
        a += b


def summary_of_movie(frames_iter, dims: tuple[int, int]) -> SummaryAccumulator:
    """Stream corrected frames (NaN borders allowed) into a SummaryAccumulator."""
    acc = SummaryAccumulator(dims)
    ref = None
    for frames in frames_iter:
        frames = np.asarray(frames, dtype=np.float32)
        if ref is None:
            ref = np.nan_to_num(np.nanmean(frames, axis=0)).astype(np.float64)
            acc._shift = ref
        nan = np.isnan(frames)
        if nan.any():
            frames = np.where(nan, ref[None].astype(np.float32), frames)
        acc.add(frames)
    return acc


def save_shifts(ctx: RunContext, rigid: np.ndarray | None, els: np.ndarray | None) -> Path:
    """Write ``{prefix}_shifts.npy`` in the layout of the module docstring.

    ``els`` is (T, n_patches, 2) [row, col] shifts; saved as ``(2, T, n_patches)``.
    """
    path = ctx.output("_shifts.npy")
    if els is not None:
        np.save(path, np.ascontiguousarray(np.moveaxis(np.asarray(els, dtype=np.float64), -1, 0)))
    else:
        np.save(path, np.asarray(rigid, dtype=np.float64).reshape(-1, 2))
    return path


def load_shifts(path: str | Path, pw_rigid: bool | None = None) -> list[np.ndarray]:
    """Shifts per dimension as mesmerize-core's ``get_shifts``: rigid, each (T,); piecewise, each (T, n_patches)."""
    arr = np.load(path, allow_pickle=False)
    is_pw = arr.ndim == 3
    if pw_rigid is not None and bool(pw_rigid) != is_pw:
        kind = "piecewise-rigid" if is_pw else "rigid"
        raise ValueError(f"pw_rigid={pw_rigid} but {Path(path).name} holds {kind} shifts of shape {arr.shape}")
    if is_pw:
        return [arr[i] for i in range(arr.shape[0])]
    return [arr[:, i] for i in range(arr.shape[1])]


def crispness(image: np.ndarray, border: int = 8) -> float:
    """How sharp a mean image is: the mean squared gradient magnitude over the image's variance.

    ``mean(|grad I|^2) / var(I)`` over the image without ``border`` px on each side (corrected
    movies carry copied or NaN strips there), in px^-2. Motion blurs the mean image of a movie,
    and blur removes the fine structure that gradients measure, so after a good correction the
    mean image is crisper than the raw movie's. Dividing by the variance makes the number
    independent of the intensity scale and offset (the corrected movie has ``min_mov``
    subtracted), unlike CaImAn's un-normalised gradient norm; comparable between two images of
    the same field of view. NaN pixels are left out; a flat image gives 0.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"crispness needs a 2-D image, got shape {img.shape}")
    b = int(border)
    if b > 0:
        if min(img.shape) <= 2 * b + 2:
            raise ValueError(f"border {b} leaves nothing of the {img.shape[0]}x{img.shape[1]} image")
        img = img[b:-b, b:-b]
    gy, gx = np.gradient(img)
    g2 = gy**2 + gx**2
    var = float(np.nanvar(img))
    if not np.isfinite(var) or var == 0.0:
        return 0.0
    return float(np.nanmean(g2) / var)
