"""Writing simulated movies to TIFF and the bundled, cached sample data for the demo."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import tifffile

from .movie import SimulatedMovie, simulate_1p, simulate_2p

__all__ = ["TiffInfo", "sample_movie", "sample_dir", "write_tiff"]

SAMPLE_VERSION = 1  # bump when the simulator changes so stale caches are regenerated
_SAMPLES = {
    "2p": dict(
        n_frames=500, dims=(128, 128), n_neurons=40, motion="rigid", max_shift=2.0, seed=20240607
    ),
    "1p": dict(
        n_frames=500, dims=(128, 128), n_neurons=40, motion="rigid", max_shift=1.5, seed=20240608
    ),
}


class TiffInfo(NamedTuple):
    """What :func:`write_tiff` wrote: ``stored = round(movie * scale + offset)``."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    offset: float


def _bounds(data: np.ndarray | SimulatedMovie) -> tuple[float, float]:
    """Value range of the movie; for an unrendered simulation an upper bound from its truth."""
    if isinstance(data, SimulatedMovie) and not data.is_rendered:
        tr = data.truth
        peak = np.asarray(tr.A @ tr.C.max(axis=1)).ravel() + tr.b @ tr.f.max(axis=1)
        top = float(peak.max())
        sd = float(np.sqrt(tr.noise_sigma**2 + tr.gain * top))
        return min(0.0, tr.baseline - 6 * tr.noise_sigma), tr.baseline + top + 6 * sd
    arr = np.asarray(data)
    return float(np.min(arr)), float(np.max(arr))


def write_tiff(
    data: np.ndarray | SimulatedMovie,
    path: str | Path,
    dtype: str = "uint16",
    scale: float | None = None,
    offset: float = 0.0,
    chunk: int = 256,
) -> TiffInfo:
    """Write a ``(T, d1, d2)`` movie as a multi-page TIFF, streaming a lazy simulation.

    Integer targets keep the simulator's units (``scale=1``) when the data already fit the
    type with at least 64 levels; otherwise ``scale``/``offset`` map the range onto 95% of
    the type.  The mapping is returned, stored in the TIFF's JSON description and, for a
    :class:`SimulatedMovie`, recorded in ``truth.tiff_scale``/``tiff_offset``.
    """
    path = Path(path)
    out_dtype = np.dtype(dtype)
    shape = tuple(data.shape)
    if len(shape) != 3:
        raise ValueError(f"expected a (T, d1, d2) movie, got shape {shape}")
    if out_dtype.kind == "f":
        scale, offset = 1.0, 0.0
    elif scale is None:
        info = np.iinfo(out_dtype)
        lo, hi = _bounds(data)
        if lo >= info.min and hi <= info.max and hi - lo >= 64:
            scale, offset = 1.0, 0.0
        else:
            span = max(hi - lo, 1e-12)
            scale = 0.95 * (info.max - info.min) / span
            offset = info.min + 0.025 * (info.max - info.min) - lo * scale
    scale, offset = float(scale), float(offset)

    def pages() -> Iterator[np.ndarray]:
        chunks = (
            data.frames(chunk)
            if isinstance(data, SimulatedMovie)
            else (data[s : s + chunk] for s in range(0, shape[0], chunk))
        )
        for block in chunks:
            block = np.asarray(block)
            if out_dtype.kind != "f" and (
                scale != 1.0 or offset != 0.0 or block.dtype != out_dtype
            ):
                info = np.iinfo(out_dtype)
                block = np.clip(
                    np.rint(block.astype(np.float32) * scale + offset), info.min, info.max
                )
            yield from block.astype(out_dtype, copy=False)

    nbytes = int(np.prod(shape)) * out_dtype.itemsize
    tifffile.imwrite(
        path,
        pages(),
        shape=shape,
        dtype=out_dtype,
        photometric="minisblack",
        bigtiff=nbytes > 2**31,
        metadata={"scale": scale, "offset": offset},
    )
    if isinstance(data, SimulatedMovie):
        data.truth.tiff_scale, data.truth.tiff_offset = scale, offset
    return TiffInfo(path, shape, out_dtype, scale, offset)


def sample_dir() -> Path:
    """Cache folder of the sample data: ``$MESMERIZE_WIDGETS_DATA`` or ~/.cache/mesmerize_widgets."""
    env = os.environ.get("MESMERIZE_WIDGETS_DATA")
    return Path(env) if env else Path.home() / ".cache" / "mesmerize_widgets"


def sample_movie(
    kind: Literal["2p", "1p"] = "2p", dest_dir: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Path of the deterministic demo movie (uint16 TIFF), generated only if missing.

    2p: 128x128x500 frames at 30 Hz, 40 neurons, slight rigid motion (<= 2 px);
    1p: 128x128x500 at 20 Hz, 40 neurons, strong background, <= 1.5 px rigid motion.
    The ground truth sits next to it as ``<name>_truth.npz`` (see ``load_truth``).
    Files are written under temporary names and renamed, so concurrent callers are safe.
    """
    if kind not in _SAMPLES:
        raise ValueError(f"kind must be one of {sorted(_SAMPLES)}")
    dest = Path(dest_dir) if dest_dir is not None else sample_dir()
    dest.mkdir(parents=True, exist_ok=True)
    name = f"sample_{kind}_v{SAMPLE_VERSION}"
    tif, npz = dest / f"{name}.tif", dest / f"{name}_truth.npz"
    if tif.exists() and npz.exists() and not overwrite:
        return tif
    simulate = simulate_2p if kind == "2p" else simulate_1p
    sim = simulate(**_SAMPLES[kind])
    tag = uuid.uuid4().hex[:8]
    tmp_tif, tmp_npz = dest / f".{name}.{tag}.tif", dest / f".{name}.{tag}.npz"
    try:
        write_tiff(sim, tmp_tif, dtype="uint16")
        sim.truth.save(tmp_npz)
        os.replace(tmp_npz, npz)
        os.replace(tmp_tif, tif)
    finally:
        for p in (tmp_tif, tmp_npz):
            p.unlink(missing_ok=True)
    return tif
