"""How much of the movie a builtin fit may hold at once, and readers that keep to it.

A patch's pixels x frames grows with the recording (an hour at 30 Hz is 108,000 frames), and
seeding holds that block several times over. So seeding aims at a fixed number of frames
(:data:`SEED_FRAMES`): a longer movie is seen averaged over more frames, at most one decay's
worth (a transient averaged over more is lost), and what a patch's seeding holds stops growing
with the recording. Within the budget (``memory_budget_mb``, per process) nothing else changes;
beyond it, more frames are averaged (again at most one decay), and past that an initialisation
refuses at once with the estimate, while the residual pass works in tiles of the field. Every
read goes through pixel blocks of at most :data:`BLOCK_ELEMENTS` values, all frames of a pixel
being contiguous in the C-order memmap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ...errors import MemoryBudgetError

#: copies of the (pixels, frames) data seeding is budgeted for: the region read and its average,
#: greedy_init's own copy and the blurred movie (its trend, squares and running sums are taken a
#: block of rows at a time: 3.7 copies with the input, by tracemalloc, on a 96x96x2,000
#: region), and room for what the memory limit counts beyond what is touched
SEED_COPIES = 8

#: float32 copies of a region that CNMF-E's correlation and PNR images hold at their peak, the
#: region itself included (measured: 6.0; the filtered movie, its thresholded copy, the mask,
#: local_correlation's products)
CORR_PNR_COPIES = 7

#: values (float32) of the movie read at once: 16 MiB, a few of which (the block, a product with
#: it) sit beside the budget
BLOCK_ELEMENTS = 1 << 22

MiB = 2**20

#: (averaged) frames seeding aims to see: up to ``tsub * SEED_FRAMES`` frames a movie is seeded
#: at ``tsub``, as always; a longer one averages more frames at a time, up to one decay. 1,000
#: rather than 2,000: on a simulated 256x256x5,000 movie seeding the patches took 11 s of a 39 s
#: fit, 7 s of 30 s with 1,000, with the same cells found (recall 1.00, precision 0.90)
SEED_FRAMES = 1000


def n_seen(T: int, ts: int) -> int:
    """Frames seeding sees after averaging ``ts`` at a time (:func:`average_frames` keeps short movies whole)."""
    return T if ts <= 1 or T < 2 * ts else T // ts


def seeding_bytes(n_pixels: int, T: int, ts: int) -> int:
    """What seeding ``n_pixels`` over ``T`` frames averaged ``ts`` at a time holds."""
    return SEED_COPIES * 4 * n_pixels * n_seen(T, ts)


def full_rate_bytes(n_pixels: int, T: int, ts: int) -> int:
    """The full-rate region plus its seeding (how patches were always initialised)."""
    return 4 * n_pixels * T + seeding_bytes(n_pixels, T, ts)


def corr_pnr_bytes(n_pixels: int, T: int, ts: int) -> int:
    """What CNMF-E's seeding of ``n_pixels`` holds over ``T`` frames averaged ``ts`` at a time:
    its images' copies of the region and the residual it seeds from."""
    return (CORR_PNR_COPIES + 1) * 4 * n_pixels * n_seen(T, ts)


def corr_pnr_tsub(n_pixels: int, T: int, n_decay: int, budget_mb: float) -> int | None:
    """Frames CNMF-E's seeding averages at a time: 1 (every frame filtered, as always) within
    the budget, past it the fewest that fit, never more than one decay (``n_decay`` frames);
    None where even that does not fit. Averaging only past the budget keeps every fit that ran
    before unchanged: on simulated 1p movies of 4,000 frames, seeding on pairs of frames was as
    good on average but not seed for seed."""
    for k in range(1, max(1, int(n_decay)) + 1):
        if corr_pnr_bytes(n_pixels, T, k) <= budget_mb * MiB:
            return k
    return None


def target_tsub(T: int, tsub: int, n_decay: int) -> int:
    """Frames averaged at a time for seeding to see about :data:`SEED_FRAMES`: ``tsub`` for
    a movie up to ``tsub * SEED_FRAMES`` frames, more for a longer one, never more than one
    decay (``n_decay``) unless ``tsub`` asks for it."""
    ts = max(1, int(tsub))
    return max(ts, min(math.ceil(T / SEED_FRAMES), int(n_decay)))


def seeding_tsub(n_pixels: int, T: int, tsub: int, n_decay: int, budget_mb: float) -> int | None:
    """Frames to average for seeding within the budget: :func:`target_tsub` when it fits, else
    the least number that fits; None when even one decay's worth (``n_decay`` frames) does not."""
    budget = budget_mb * MiB
    ts = target_tsub(T, tsub, n_decay)
    if seeding_bytes(n_pixels, T, ts) <= budget:
        return ts
    need = max(ts, math.ceil(SEED_COPIES * 4 * n_pixels * T / max(budget, 1)))
    while need <= max(ts, n_decay):
        if seeding_bytes(n_pixels, T, need) <= budget:
            return need
        need += 1
    return None


def require_seeding_tsub(n_pixels: int, T: int, tsub: int, n_decay: int, budget_mb: float, what: str) -> int:
    """:func:`seeding_tsub`, or a :class:`MemoryBudgetError` naming the estimate and the settings."""
    ts = seeding_tsub(n_pixels, T, tsub, n_decay, budget_mb)
    if ts is not None:
        return ts
    cap = max(1, int(tsub), int(n_decay))
    raise MemoryBudgetError(
        f"seeding {what} ({n_pixels} pixels x {T} frames) needs "
        f"{seeding_bytes(n_pixels, T, cap) / MiB:.0f} MiB even with {cap} frames averaged (one decay: "
        f"more would average transients away), over memory_budget_mb={budget_mb:g}. Use smaller "
        "patches (rf, stride) or raise memory_budget_mb (per process: each of n_processes holds one patch)"
    )


def index_blocks(idx: np.ndarray, T: int) -> list[np.ndarray]:
    """``idx`` (sorted pixel indices) in runs of at most :data:`BLOCK_ELEMENTS` values."""
    step = max(1, BLOCK_ELEMENTS // max(T, 1))
    return [idx[s : s + step] for s in range(0, len(idx), step)]


def region_pixels(dims: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    """Indices (Fortran pixel order, sorted) of a rectangle of the field."""
    r = np.arange(rows.start, rows.stop)
    return (np.arange(cols.start, cols.stop)[:, None] * dims[0] + r[None, :]).ravel()


def average_frames(data: np.ndarray, ts: int) -> np.ndarray:
    """(..., T) -> (..., T // ts): each ``ts`` consecutive frames averaged (the tail dropped),
    as CaImAn's ``tsub``; unchanged when ``ts`` is 1 or the movie is shorter than two groups."""
    T = data.shape[-1]
    if ts <= 1 or T < 2 * ts:
        return data
    n = T // ts
    if ts >= 8 or data.dtype.kind != "f":  # numpy sums 8 or more values pairwise: keep its rounding
        return data[..., : n * ts].reshape(*data.shape[:-1], n, ts).mean(-1)
    # fewer are summed one after another, as here: the same values, 30x faster than numpy's
    # reduction over a 2-long axis (seeding averages every patch and the residual this way)
    out = data[..., 0 : n * ts : ts].copy()
    for j in range(1, ts):
        out += data[..., j : n * ts : ts]
    out /= ts
    return out


def _region_blocks(Yr: np.ndarray, dims: tuple[int, int], rows: slice, cols: slice
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """(position, float32 (n, T) rows) of a rectangle's pixels (Fortran order), a bounded
    block at a time; a contiguous run of pixels is read as a slice, not gathered."""
    T = Yr.shape[1]
    pos = 0
    for blk in index_blocks(region_pixels(dims, rows, cols), T):
        lo, hi = int(blk[0]), int(blk[-1]) + 1
        yield pos, np.asarray(Yr[lo:hi] if hi - lo == len(blk) else Yr[blk], np.float32)
        pos += len(blk)


def read_region(Yr: np.ndarray, dims: tuple[int, int], rows: slice, cols: slice, ts: int = 1) -> np.ndarray:
    """(h, w, T') float32 of a rectangle of a (P, T) Fortran-pixel-order movie, averaged ``ts``
    frames at a time (:func:`average_frames`), read a bounded block of pixels at a time."""
    h, w = rows.stop - rows.start, cols.stop - cols.start
    out = np.empty((h * w, n_seen(Yr.shape[1], ts)), np.float32)
    for pos, data in _region_blocks(Yr, dims, rows, cols):
        out[pos : pos + len(data)] = average_frames(data, ts)
    return out.reshape(w, h, -1).transpose(1, 0, 2)


def project_region(Yr: np.ndarray, dims: tuple[int, int], rows: slice, cols: slice, A: np.ndarray) -> np.ndarray:
    """``A.T @ Y`` (K, T) for footprints ``A`` over a rectangle (its pixels, Fortran order),
    from the full-rate movie a bounded block at a time."""
    out = np.zeros((A.shape[1], Yr.shape[1]), np.float64)
    for pos, data in _region_blocks(Yr, dims, rows, cols):
        out += A[pos : pos + len(data)].T.astype(np.float32) @ data
    return out


def core_tiles(dims: tuple[int, int], side: int, margin: int) -> list[tuple[slice, slice, slice, slice]]:
    """Tiles covering the field: (rows, cols) of each tile grown by ``margin`` and (rows, cols)
    of its core. The cores partition the field, so a seed kept only where its peak lies in the
    core is found once; the margin lets a cell on a core's edge be fitted whole."""
    out = []
    for r0 in range(0, dims[0], side):
        for c0 in range(0, dims[1], side):
            r1, c1 = min(r0 + side, dims[0]), min(c0 + side, dims[1])
            out.append((slice(max(r0 - margin, 0), min(r1 + margin, dims[0])),
                        slice(max(c0 - margin, 0), min(c1 + margin, dims[1])),
                        slice(r0, r1), slice(c0, c1)))
    return out


def tile_side(T: int, ts: int, margin: int, budget_mb: float) -> int:
    """Largest core side whose tile (core plus margins) seeds within the budget."""
    per_pixel = SEED_COPIES * 4 * n_seen(T, ts)
    px = budget_mb * MiB / per_pixel
    return max(1, int(math.sqrt(px)) - 2 * margin)
