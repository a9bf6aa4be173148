"""CNMF / CNMF-E on the built-in backend: files in, CaImAn-layout files out.

The input movie is first written as a C-order CaImAn memmap in the output directory
(``{uuid}_cnmf-memmap__d1_..._order_C_frames_N.mmap``, what CaImAn's CNMF reads), streaming
it once and computing the summary images on the way. The fit itself is in :mod:`.core`.

Documented results for degenerate input:

* a movie without cells (or ``K=0``) gives ``K=0`` components: an HDF5 with an empty A (pixels
  x 0), empty C/S/YrA, the background and the noise image;
* NaN or infinite values, a ``gSig`` larger than the field (or patch), ``use_cnn=True`` or an
  unreadable ``Ain_path`` raise a ``ValueError`` naming the problem (the item fails cleanly).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...arrays import open_movie
from ...formats.cnmf_hdf5 import Estimates, save_cnmf
from ...formats.memmap import MemmapWriter, load_memmap, require_free_space
from ...processes import Workers, private_memory
from ..context import RunContext
from ..images import SummaryAccumulator, TransposedSummary
from ..summary.builtin import save_summary_images
from . import CNMF_GROUPS, core

#: frames checked and summed at a time (float64 sums: a few times their float32 size)
_SUM_FRAMES = 200
#: the most frames scattered into the C-order memmap at once: 1,024 fill a 4 KiB page of each
#: pixel's series, so every page is written once, whole
_WRITE_FRAMES = 1024


def write_chunk_frames(dims: tuple[int, int], held_bytes: float) -> int:
    """Frames per write into the C-order memmap: as many as ``held_bytes`` of float32 allow, from
    200 up to :data:`_WRITE_FRAMES`. Each write puts a few hundred bytes into every pixel's
    series, so small writes touch every page of the file many times: 200 frames at a time took
    1.8x the time of 1,000 (a 256x256 movie, 10,000 frames)."""
    return int(min(_WRITE_FRAMES, max(_SUM_FRAMES, held_bytes // (4 * dims[0] * dims[1]))))


def write_c_memmap(ctx: RunContext, held_bytes: float = 0.0,
                   preflight: Callable[[tuple[int, int], int], None] | None = None
                   ) -> tuple[Path, SummaryAccumulator | TransposedSummary, tuple[int, int], int]:
    """Stream the input movie into a C-order memmap, checking every frame for NaN/inf;
    ``preflight(dims, n_frames)`` may refuse the run first, before minutes of writing.
    ``held_bytes``: what a chunk of frames may hold (see :func:`write_chunk_frames`)."""
    movie = open_movie(ctx.input_path, var_name_hdf5=ctx.main.get("var_name_hdf5", "mov"))
    if movie.ndim != 3:
        raise ValueError(f"CNMF needs a 2-D movie (t, rows, cols); {ctx.input_path} has shape {movie.shape}")
    n = len(movie)
    dims = (int(movie.shape[1]), int(movie.shape[2]))
    if n < 2:
        raise ValueError(f"{ctx.input_path} has {n} frame(s); CNMF needs a movie")
    if preflight is not None:
        preflight(dims, n)
    chunk = write_chunk_frames(dims, held_bytes)
    # an order-F memmap (mcorr's output) holds each frame's pixels in the order the C-order file
    # does: read as they are, they go to the file with one transpose, not three, and the summary
    # images are summed over the frames transposed
    as_stored = getattr(movie, "order", None) == "F" and hasattr(movie, "read_pixel_frames")
    # sums of 200 frames: float32 is exact enough
    acc = SummaryAccumulator(dims[::-1] if as_stored else dims, chunk_dtype=np.float32, keep_buffer=True)

    summing = ThreadPoolExecutor(1, thread_name_prefix="summary")  # NumPy lets go of the GIL
    pending: list[Future] = []

    def parts(start: int, m: int, buf: np.ndarray, reuse: bool) -> Iterator[np.ndarray]:
        """Frames ``start`` to ``start + m``, checked, 200 at a time in ``buf`` (at its start each
        time when ``reuse``, else each at its place). A thread sums each part into the summary
        images while the caller writes it, and is waited for before the buffer is read into."""
        for s0 in range(0, m, _SUM_FRAMES):
            k = min(_SUM_FRAMES, m - s0)
            part = buf[:k] if reuse else buf[s0 : s0 + k]
            if pending:
                pending.pop().result()
            if as_stored:
                movie.read_pixel_frames(start + s0, part)
                frames = part.reshape(len(part), dims[1], dims[0])
            else:
                frames = part.reshape(len(part), *dims)
                frames[:] = movie[start + s0 : start + s0 + len(part)]  # cast in place, no float32 copy
            finite = np.isfinite(part).all(1)
            if not finite.all():
                bad = start + s0 + int(np.flatnonzero(~finite)[0])
                raise ValueError(f"frame {bad} of {ctx.input_path} contains NaN or infinite values")
            pending.append(summing.submit(acc.add, frames))
            done = start + s0 + len(part)
            ctx.progress(0.1 * done / n, f"memmap {done}/{n} frames")
            yield part

    # as stored, each 200 frames go into the mapped file as they come, only they held: a buffer
    # costs time too where fresh pages are slow (here 0.6 s per 262 MB touched the first time)
    buf = np.empty((min(_SUM_FRAMES if as_stored else chunk, n), dims[0] * dims[1]), np.float32)
    with summing, MemmapWriter(ctx.output_dir, f"{ctx.prefix}_cnmf-memmap_", dims, order="C", n_frames=n) as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            if as_stored:
                w.write_pixel_frames(parts(start, m, buf, reuse=True), m)
            else:
                block = buf[:m]
                for _ in parts(start, m, block, reuse=False):
                    pass
                w.write(block.reshape(m, *dims))
    for last in pending:  # the last part's sums, done when the pool shut down: raise what failed
        last.result()
    return w.path, TransposedSummary(acc) if as_stored else acc, dims, n


def _preflight(ctx: RunContext, dims: tuple[int, int], n: int, opts: core.Options, seeded: bool) -> None:
    """Refuse at once what cannot fit: seeding in the memory budget, and the disk for the memmap
    plus CNMF-E's ring background where a long movie puts that on disk too."""
    if not seeded:
        core.check_budget(dims, n, opts)
    ring = core.ring_scratch_bytes(dims, n, opts)
    if ring:
        require_free_space(ctx.output_dir, dims[0] * dims[1] * n * 4 + ring,
                           f"the C-order memmap of {n} frames and CNMF-E's ring background")


def load_masks(path: str | os.PathLike, dims: tuple[int, int], input_path: Path | None = None) -> np.ndarray:
    """Seed masks for ``Ain_path``: an .npy, bool or float, shaped (rows, cols, K), (K, rows, cols)
    or (pixels, K) in Fortran pixel order (CaImAn's A), or another cnmf item's ``.hdf5`` (its
    accepted components, all of them if it was never evaluated); a relative path is taken from
    the input movie's directory. Returns dense (pixels, K) float32 footprints with unit l2 norm."""
    p = Path(path)
    if not p.is_absolute() and input_path is not None:
        p = Path(input_path).parent / p
    if not p.exists():
        raise ValueError(f"Ain_path {path!r} not found (looked for {p})")
    if p.suffix in (".hdf5", ".h5"):
        from ...formats.cnmf_hdf5 import load_cnmf

        est = load_cnmf(p).estimates
        good = est.idx_components
        m = est.A[:, good] if good is not None and len(good) else est.A
    else:
        m = np.load(p, allow_pickle=False)
    if sp.issparse(m):  # pragma: no cover - np.load never gives one, kept for callers
        m = m.toarray()
    m = np.asarray(m)
    d1, d2 = dims
    if m.ndim == 3 and m.shape[:2] == (d1, d2):
        A = m.reshape(d1 * d2, -1, order="F")
    elif m.ndim == 3 and m.shape[1:] == (d1, d2):
        A = np.moveaxis(m, 0, -1).reshape(d1 * d2, -1, order="F")
    elif m.ndim == 2 and m.shape[0] == d1 * d2:
        A = m
    else:
        raise ValueError(
            f"Ain_path masks have shape {m.shape}; expected (rows, cols, K), (K, rows, cols) or "
            f"(pixels, K) for a {d1}x{d2} movie"
        )
    A = np.nan_to_num(A.astype(np.float32))
    if (A < 0).any():
        raise ValueError("Ain_path masks must be nonnegative")
    nrm = np.linalg.norm(A, axis=0)
    keep = nrm > 0
    return A[:, keep] / nrm[keep]


def grouped_params(main: dict[str, Any], dims: tuple[int, int], mmap: Path) -> dict[str, dict[str, Any]]:
    """Flat ``main`` -> CaImAn's groups, each key in every group that has it (as CaImAn does)."""
    from ...formats.cnmf_hdf5 import default_params

    defaults = default_params()
    out: dict[str, dict[str, Any]] = {g: {} for g in CNMF_GROUPS}
    for key, value in main.items():
        for g in CNMF_GROUPS:
            if key in defaults[g]:
                out[g][key] = list(value) if isinstance(value, tuple) and key in ("gSig", "gSiz") else value
    out["data"].update(dims=dims, fnames=[str(mmap)])
    return out


def _estimates(res: dict[str, Any], dims: tuple[int, int], cn: np.ndarray | None) -> Estimates:
    return Estimates(
        A=sp.csc_matrix(res["A"]), C=res["C"], S=res["S"], YrA=res["YrA"], b=res["b"], f=res["f"],
        g=res["g"], sn=res["sn"], bl=res["bl"], c1=res["c1"], neurons_sn=res["neurons_sn"],
        lam=res["lam"], idx_components=np.asarray(res["idx_components"], int),
        idx_components_bad=np.asarray(res["idx_components_bad"], int),
        SNR_comp=np.asarray(res["SNR_comp"], float), r_values=np.asarray(res["r_values"], float),
        cnn_preds=np.zeros(0), dims=dims, Cn=cn, W=res.get("W"), b0=res.get("b0"),
        extra={"fast_fraction": np.asarray(res["fast_fraction"], float),
               "rv_only_snr_min": np.float64(res["rv_only_snr_min"])},
    )


def _run(ctx: RunContext, cnmfe: bool) -> dict[str, Any]:
    from . import CNMFE_SCHEMA, SCHEMA

    schema = CNMFE_SCHEMA if cnmfe else SCHEMA
    params = schema.validate(ctx.params, fill_defaults=True)
    main = params["main"]
    opts = core.Options.from_main(main, cnmfe=cnmfe)
    if ctx.memory_limit and "memory_budget_mb" not in ctx.main:
        # a quarter of what the limit leaves beside what this process holds already (the limit
        # counts reserved memory: libraries, thread pools); the rest for blocks of the movie,
        # transients and the K x T outputs
        left = ctx.memory_limit - private_memory()
        opts.memory_budget_mb = max(16.0, left / 4 / 2**20)
    if opts.use_cnn:
        raise ValueError("the CNN classifier is CaImAn-only: set use_cnn=False or run with backend='caiman'")
    seeded = bool(params.get("Ain_path"))
    n_proc = int(main.get("n_processes") or ctx.n_processes or 1)
    # the fit's workers start while the memmap is written
    workers = Workers.start(n_proc, preload=core.WORKER_MODULES) if n_proc > 1 and opts.rf is not None and not seeded else None
    with workers or contextlib.nullcontext():
        return _fit_and_save(ctx, params, opts, cnmfe, seeded, workers)


def _fit_and_save(ctx: RunContext, params: dict[str, Any], opts: core.Options, cnmfe: bool, seeded: bool,
                  workers: Workers | None) -> dict[str, Any]:
    main = params["main"]
    mmap, acc, dims, n = write_c_memmap(ctx, opts.held_bytes,
                                        preflight=lambda dims, n: _preflight(ctx, dims, n, opts, seeded))
    final_mmap = ctx.final_output_dir / mmap.name
    Ain = None
    if params.get("Ain_path"):
        Ain = load_masks(params["Ain_path"], dims, ctx.input_path)
        main = {**main, "rf": None, "only_init": False}
    Yr, _, _ = load_memmap(mmap)
    outputs: dict[str, Any] = {}
    if cnmfe:
        # the images CNMF-E seeds from, for the whole field (row.caiman.get_pnr_image)
        cn, pnr = core.corr_pnr_images_tiled(Yr, dims, opts)
        pnr_path = ctx.output("_pnr.npy")
        np.save(pnr_path, pnr.astype(np.float32))
        outputs["pnr-image-path"] = pnr_path

    def progress(fraction: float, message: str = "") -> None:
        ctx.progress(0.1 + 0.85 * fraction, message)

    res = core.fit(Yr, dims, opts, mmap_path=mmap, Ain=Ain, refit=bool(params.get("refit")), progress=progress,
                   checkpoint_dir=ctx.checkpoint_dir, workers=workers)
    del Yr
    outputs.update(save_summary_images(ctx, acc))
    if cnmfe:
        np.save(outputs["corr-img-path"], cn.astype(np.float32))  # CNMF-E's own correlation image
    corr = np.load(outputs["corr-img-path"])
    hdf5 = save_cnmf(
        ctx.output(".hdf5"), _estimates(res, dims, corr), grouped_params(main, dims, final_mmap),
        dims=dims, mmap_file=str(final_mmap),
    )
    outputs["cnmf-hdf5-path"] = hdf5
    outputs["cnmf-memmap-path"] = mmap
    outputs["n_components"] = int(res["A"].shape[1])
    outputs["n_accepted"] = int(len(res["idx_components"]))
    ctx.progress(1.0, f"{outputs['n_accepted']} of {outputs['n_components']} components accepted")
    return outputs


def run(ctx: RunContext) -> dict[str, Any]:
    """CNMF (greedy initialisation, low-rank background)."""
    return _run(ctx, cnmfe=False)


def run_cnmfe(ctx: RunContext) -> dict[str, Any]:
    """CNMF-E (correlation x PNR initialisation). With nb=0 (default) the background is CaImAn's
    ring model, stored as ``estimates.W`` (sparse, on the ssub_B grid) and ``b0``; ``b``/``f``
    then hold a low-rank summary of that same background (``b[:, 0] = b0``, ``f[0] = 1``, plus
    its leading fluctuation modes) so b ⊗ f reconstructions (rcb, residuals) show it. CaImAn
    leaves b, f empty there: its own rcb needs W, b0 and the movie."""
    return _run(ctx, cnmfe=True)
