"""A movie larger than what its items may hold runs end to end (issue #14).

The items run under the runner's ``memory_limit`` (RLIMIT_DATA: the private memory each
process allocates; the memmaps a long movie is read through are not counted, which is the
point). mcorr writes its float32 output a chunk at a time; the builtin CNMF seeds each patch
within a third of the limit and reads the rest of the movie a block of pixels at a time. Then
the lazy arrays and a viewer step read windows of the result from the same files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_pieces_find_the_whole_fields_cells, cells_found

import mesmerize_widgets as mw
from mesmerize_widgets.algorithms.cnmf import budget, core
from mesmerize_widgets.errors import MemoryBudgetError
from mesmerize_widgets.sim import simulate_2p
from mesmerize_widgets.sim.io import write_tiff
from mesmerize_widgets.sim.scoring import match_to_truth

os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")  # the viewer step renders offscreen
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

# an item process holds ~150 MB before it seeds (its BLAS runs one thread under a limit; with
# the two threads a lone item got on 2 cores it held ~370 MB), which leaves cnmf a budget of
# (500 - 150) / 4 MB: at 400 MB the 33x33 patches (66 MiB to seed) are refused at once
LIMIT = 500 * 2**20
DIMS = (128, 128)
FRAMES = 24_000  # float32: 1.6 GB for the motion-corrected movie, as much again for CNMF's memmap
MCORR = {"pw_rigid": True, "max_shifts": (6, 6), "strides": (48, 48), "overlaps": (24, 24),
         "max_deviation_rigid": 3}
# one process: the patches are seeded in the item process itself, the tighter case
# (a 49x49 patch of 20,000 frames needs more than such a limit leaves: refused at once, with the estimate)
CNMF = {"fr": 30, "rf": 16, "stride": 8, "K": 4, "gSig": (4, 4), "p": 1, "nb": 2, "use_cnn": False, "n_processes": 1}


@pytest.mark.slow
@pytest.mark.usefixtures("client")
def test_a_movie_larger_than_the_item_memory_runs_mcorr_cnmf_and_the_viewer(batch, raw_dir):
    sim = simulate_2p(n_frames=FRAMES, dims=DIMS, n_neurons=45, motion="rigid", max_shift=2.0, seed=3, lazy=True)
    write_tiff(sim, raw_dir / "long.tif")
    float_bytes = 4 * FRAMES * DIMS[0] * DIMS[1]
    assert float_bytes > 2 * LIMIT

    batch.caiman.add_item("mcorr", "long", "long.tif", {"main": MCORR})
    mc = batch.iloc[-1]
    mc.caiman.run(progress=False, memory_limit=LIMIT)
    assert mc["status"] == "done", mc["error"]
    batch.caiman.add_item("cnmf", "long", mc, {"main": CNMF})
    cn = batch.iloc[-1]
    cn.caiman.run(progress=False, memory_limit=LIMIT)
    assert cn["status"] == "done", cn["error"]
    df = mw.load_batch(batch.attrs["batch_path"])
    mc, cn = df.iloc[0], df.iloc[1]
    out = mc.mcorr.get_output_path()
    assert os.path.getsize(out) >= float_bytes > 2 * LIMIT  # the files really are larger

    # correct: the motion follows the truth and the cells are found with their traces
    shifts = np.stack([np.asarray(s).mean(1) for s in mc.mcorr.get_shifts()], 1)  # patches' mean
    err = shifts - sim.truth.shifts
    err -= err.mean(0)  # up to the template's constant offset
    assert float(np.sqrt(np.mean(err**2))) <= 0.2
    est = cn.cnmf.get_output().estimates
    good = np.asarray(est.idx_components, int)
    m = match_to_truth(est.A.toarray()[:, good], np.asarray(est.C)[good], sim.truth)
    assert m["recall"] >= 0.9 and m["precision"] >= 0.9, m
    assert est.C.shape[1] == FRAMES

    # windows of the lazy arrays at the end of the movie: Y = A⊗C + b⊗f + residuals there
    t = FRAMES - 50
    rcm, rcb, res = cn.cnmf.get_rcm(), cn.cnmf.get_rcb(), cn.cnmf.get_residuals()
    Y = np.asarray(cn.caiman.get_input_movie()[t : t + 5], np.float32)
    np.testing.assert_allclose(np.asarray(rcm[t : t + 5]) + np.asarray(rcb[t : t + 5]) + np.asarray(res[t : t + 5]),
                               Y, rtol=1e-4, atol=1e-2)

    from mesmerize_widgets.widgets.cnmf_viewer import CNMFViewer

    v = CNMFViewer(cn)
    v.set_time(t)
    np.testing.assert_allclose(v.shown_frame(0), Y[0], rtol=1e-5)
    v.render()


def test_seeding_past_the_budget_averages_frames_then_refuses():
    # within the budget: tsub as given; beyond: more frames averaged, never more than a decay
    assert budget.seeding_tsub(48 * 48, 1000, 2, 12, 1024) == 2
    ts = budget.seeding_tsub(48 * 48, 30_000, 2, 12, 256)
    assert ts is not None and 2 < ts <= 12 and budget.seeding_bytes(48 * 48, 30_000, ts) <= 256 * 2**20
    assert budget.seeding_tsub(512 * 512, 108_000, 2, 12, 1024) is None
    with pytest.raises(MemoryBudgetError, match=r"rf.*memory_budget_mb"):
        budget.require_seeding_tsub(512 * 512, 108_000, 2, 12, 1024, "the whole field (rf=None)")


def test_seeding_sees_a_fixed_number_of_frames_whatever_the_length():
    """A patch's seeding holds about as much at 20,000 frames as at 2,000: more frames averaged
    (never more than a decay), not more frames held; short movies are seeded at tsub."""
    n_px, tsub, n_decay = 49 * 49, 2, 12
    assert budget.target_tsub(tsub * budget.SEED_FRAMES, tsub, n_decay) == tsub  # unchanged up to there
    ts = budget.seeding_tsub(n_px, 10_000, tsub, n_decay, 1024)
    assert ts == 10 and budget.n_seen(10_000, ts) == budget.SEED_FRAMES
    assert budget.target_tsub(108_000, tsub, n_decay) == n_decay  # one decay at most
    opts = core.Options.from_main({"gSig": (4, 4), "fr": 30, "rf": 24, "tsub": tsub})
    assert core._seeding_plan(n_px, 1000, opts, "a patch") is None  # read whole at full rate
    assert core._seeding_plan(n_px, 10_000, opts, "a patch") == 10  # averaged, traces projected


def test_the_residual_pass_by_tiles_finds_the_cells_the_whole_field_finds(tmp_path):
    """Past the budget the residual is seeded tile by tile; each cell is kept once, by the tile
    whose core holds its peak, and the tiles find what the whole-field pass finds."""
    sim = simulate_2p(n_frames=400, dims=(64, 64), n_neurons=14, motion=None, seed=5)
    Yr = np.asarray(sim.movie, np.float32).transpose(1, 2, 0).reshape(-1, 400, order="F")
    mov = core._Movie(Yr)
    # both passes see the movie averaged 12 frames at a time (one decay), as the tiled one must
    # K 60: 20 residual seeds, more than the 14 cells, so neither pass is cut short by its budget
    opts = core.Options.from_main({"gSig": (4, 4), "fr": 30, "K": 60, "nb": 1, "rf": None, "tsub": 12})
    P = Yr.shape[0]
    A0, C0 = np.zeros((P, 0), np.float32), np.zeros((0, 400), np.float32)
    b, f = core._init_background(mov, A0, C0, 1, np.random.default_rng(0))
    whole, _ = core._seeds_from_residual(mov, A0, C0, b, f, (64, 64), opts)
    opts.memory_budget_mb = 2.0  # the 64x64 field needs 3 MiB: tiles with cores of about 27x27
    tiled, C2 = core._seeds_from_residual(mov, A0, C0, b, f, (64, 64), opts)
    assert C2.shape == (tiled.shape[1], 400)
    # no cell seeded twice across tiles
    assert_pieces_find_the_whole_fields_cells(sim.truth.A.toarray(), whole, tiled, 8, 0.5)


def test_memory_limit_counts_private_memory_not_memmapped_files(tmp_path: Path):
    """RLIMIT_DATA: a process under 200 MB reads a 600 MB memmap whole, block by block."""
    import subprocess
    import sys

    path = tmp_path / "big.bin"
    m = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(150, 2**20))
    m[:] = 1.0
    m.flush()
    del m
    code = (
        "import resource, numpy as np\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({200 * 2**20}, {200 * 2**20}))\n"
        f"m = np.load({str(path)!r}, mmap_mode='r')\n"
        "print(sum(float(np.asarray(m[i:i + 10]).sum()) for i in range(0, 150, 10)))\n"
        "try:\n    np.ones(300 * 2**20 // 8)\nexcept MemoryError:\n    print('refused')\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(float(150 * 2**20)), "refused"]


@pytest.mark.usefixtures("client")
def test_an_output_larger_than_the_free_disk_is_refused_before_it_starts(batch, raw_dir):
    """An HDF5 movie declared longer than the disk can hold in float32 (its chunks are never
    written, so the file is small): mcorr and cnmf refuse at once with the numbers, leave no
    partial output, and the batch stays valid."""
    import shutil

    import h5py

    batch_dir = Path(batch.attrs["batch_path"])
    n = shutil.disk_usage(batch_dir).free // (512 * 512 * 4) + 1000
    with h5py.File(raw_dir / "huge.h5", "w") as f:
        f.create_dataset("mov", shape=(n, 512, 512), dtype="uint16", chunks=(1, 512, 512), compression="gzip")
    assert (raw_dir / "huge.h5").stat().st_size < 2**20
    batch.caiman.add_item("mcorr", "huge", "huge.h5", {"main": {"var_name_hdf5": "mov"}})
    batch.caiman.add_item("cnmf", "huge", "huge.h5", {"main": {"var_name_hdf5": "mov", "rf": 24, "stride": 12}})
    for i in range(2):
        row = batch.iloc[i]
        row.caiman.run(progress=False)
        assert row["status"] == "failed"
        assert "DiskSpaceError" in row["error"] and "GiB free" in row["error"], row["error"]
        assert not list((batch_dir / row["uuid"]).glob("*.mmap*"))
    df = mw.load_batch(batch_dir)
    assert df["status"].tolist() == ["failed", "failed"]


def test_cnmfe_images_tile_by_tile_equal_the_whole_field_pass():
    from mesmerize_widgets.sim import simulate_realistic_1p

    sim = simulate_realistic_1p(seed=1, n_frames=200, dims=(64, 64), n_neurons=15)
    Y = np.asarray(sim.movie, np.float32)
    Yr = np.ascontiguousarray(Y.transpose(1, 2, 0).reshape(-1, len(Y), order="F"))
    opts = core.Options.from_main({"gSig": (3, 3), "gSiz": (13, 13), "center_psf": True, "method_init": "corr_pnr",
                                   "K": None, "nb": 0}, cnmfe=True)
    cn, pnr, _, _ = core.corr_pnr_images(Y.transpose(1, 2, 0), opts)
    opts.memory_budget_mb = 4.0  # 64x64x200 needs ~22 MiB: tiles with 11-pixel cores
    cn_t, pnr_t = core.corr_pnr_images_tiled(Yr, (64, 64), opts)
    np.testing.assert_allclose(cn_t, cn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pnr_t, pnr, rtol=1e-5, atol=1e-5)


def test_cnmfe_images_hold_no_more_than_the_copies_their_tiles_are_sized_by():
    """The tile size assumes CORR_PNR_COPIES float32 copies of a region: measured with
    tracemalloc, the images' peak (the region included) stays within it. At 4 copies assumed,
    a 2 GiB budget let a 128x128x8,000 cnmfe run peak at 2.8 GiB."""
    import tracemalloc

    from mesmerize_widgets.sim import simulate_1p

    Y3 = np.ascontiguousarray(np.asarray(simulate_1p(n_frames=2000, dims=(64, 64), n_neurons=8, seed=2,
                                                     motion=None).movie, np.float32).transpose(1, 2, 0))
    opts = core.Options.from_main({"gSig": (3, 3), "method_init": "corr_pnr", "K": None, "nb": 0}, cnmfe=True)
    tracemalloc.start()
    try:
        core.corr_pnr_images(Y3, opts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert Y3.nbytes + peak <= budget.CORR_PNR_COPIES * Y3.nbytes
    assert Y3.nbytes + peak > (budget.CORR_PNR_COPIES - 2) * Y3.nbytes  # and not far above it


@pytest.mark.usefixtures("client")
def test_a_fit_that_cannot_keep_to_its_budget_is_refused_before_the_memmap_is_written(batch, raw_dir):
    import tifffile

    tifffile.imwrite(raw_dir / "m.tif", np.zeros((3000, 96, 96), np.uint16))
    batch.caiman.add_item("cnmfe", "big", "m.tif", {"main": {"memory_budget_mb": 16}})
    row = batch.iloc[0]
    row.caiman.run(progress=False)
    assert row["status"] == "failed"
    assert "MemoryBudgetError" in row["error"] and "memory_budget_mb=16" in row["error"], row["error"]
    assert not list(Path(batch.attrs["batch_path"]).rglob("*.mmap"))


def test_cnmfe_ring_background_of_a_long_movie_goes_to_disk_with_the_same_values(tmp_path: Path):
    """CNMF-E's ring fluctuation is (pixels / ssub_B^2) x frames, held three times while computed:
    past the budget it is computed a block of rows at a time into unlinked files beside the
    memmap. Same values, and the process allocates less than one copy of it."""
    import tracemalloc

    from mesmerize_widgets.algorithms.cnmf.model import Movie
    from mesmerize_widgets.algorithms.cnmf.ring import RingModel
    from mesmerize_widgets.sim import simulate_1p

    sim = simulate_1p(n_frames=600, dims=(48, 40), n_neurons=6, seed=3, motion=None)
    Y = np.asarray(sim.movie, np.float32)
    Yr = np.memmap(tmp_path / "Yr.mmap", np.float32, "w+", shape=(48 * 40, len(Y)))
    Yr[:] = Y.transpose(1, 2, 0).reshape(-1, len(Y), order="F")
    mov = Movie(Yr)
    mov.blocks = [slice(s, min(mov.P, s + 100)) for s in range(0, mov.P, 100)]  # many blocks
    A = sim.truth.A.toarray().astype(np.float32)  # sparse (pixels in Fortran order, K)
    C = np.asarray(sim.truth.C, np.float32)
    rm = RingModel.fit(mov, A, C, (48, 40), radius=8.0, ssub=2)
    in_memory = rm.fluctuation(mov, A, C)
    tracemalloc.start()
    try:
        on_disk = rm.fluctuation(mov, A, C, keep_bytes=0, scratch=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(on_disk, np.memmap) and not isinstance(in_memory, np.memmap)
    # both against the model's definition, W·(ds(Y - A·C) - ds(b0)), taken whole in float64
    want = rm.W @ (rm.D @ (np.asarray(Yr, np.float64) - A.astype(np.float64) @ C) - (rm.D @ rm.b0)[:, None])
    for got in (in_memory, on_disk):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * float(np.abs(want).max()))
    assert peak < in_memory.nbytes  # in memory it holds two copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Yr.mmap"]  # the scratch files are unlinked
    b, f = rm.low_rank(on_disk)
    b_m, f_m = rm.low_rank(in_memory)
    np.testing.assert_allclose(b @ f, b_m @ f_m, rtol=1e-3, atol=1e-3 * float(np.abs(b_m @ f_m).max()))
    blk = np.arange(100, 300)
    np.testing.assert_allclose(rm.background(on_disk, blk), rm.background(in_memory, blk), rtol=1e-4,
                               atol=1e-3 * float(np.abs(in_memory).max()))


def test_cnmfe_with_its_ring_background_on_disk_finds_the_same_components(tmp_path: Path):
    """A whole CNMF-E fit whose budget sends the ring background to disk (and Y - B to be
    recomputed per pass) accepts the same components, with the same footprints and traces."""
    from mesmerize_widgets.sim import simulate_1p

    T = 600
    Y = np.asarray(simulate_1p(n_frames=T, dims=(64, 64), n_neurons=10, seed=5, motion=None).movie, np.float32)
    path = tmp_path / f"m_d1_64_d2_64_d3_1_order_C_frames_{T}.mmap"
    Yr = np.memmap(path, np.float32, "w+", shape=(64 * 64, T))
    Yr[:] = Y.transpose(1, 2, 0).reshape(-1, T, order="F")
    fits = {}
    for mb in (1024.0, 16.0):
        opts = core.Options.from_main({"gSig": (3, 3), "gSiz": (13, 13), "method_init": "corr_pnr", "K": None,
                                       "nb": 0, "rf": 12, "stride": 6, "min_corr": 0.8, "min_pnr": 8, "fr": 20,
                                       "memory_budget_mb": mb}, cnmfe=True)
        assert (core.ring_scratch_bytes((64, 64), T, opts) > 0) == (mb == 16.0)
        fits[mb] = core.fit(Yr, (64, 64), opts, mmap_path=path)
    big, small = fits[1024.0], fits[16.0]
    assert len(big["idx_components"]) >= 5
    np.testing.assert_array_equal(small["idx_components"], big["idx_components"])
    np.testing.assert_allclose(small["A"], big["A"], atol=1e-4)
    np.testing.assert_allclose(small["C"], big["C"], atol=1e-3 * float(np.abs(big["C"]).max()))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_cnmfe_seeding_over_its_budget_averages_frames_instead_of_refusing(tmp_path: Path):
    """CNMF-E filters every frame to seed, so a long movie's patch outgrew the budget and the run
    was refused. Past the budget it now seeds on frames averaged (at most one decay's worth) and
    finds the cells the full-rate seeding finds."""
    from mesmerize_widgets.sim import simulate_1p
    from mesmerize_widgets.sim.scoring import match_to_truth

    T = 1500
    sim = simulate_1p(n_frames=T, dims=(64, 64), n_neurons=10, seed=1)
    path = tmp_path / f"m_d1_64_d2_64_d3_1_order_C_frames_{T}.mmap"
    Yr = np.memmap(path, np.float32, "w+", shape=(64 * 64, T))
    Yr[:] = np.asarray(sim.movie, np.float32).transpose(1, 2, 0).reshape(-1, T, order="F")
    main = {"gSig": (4, 4), "gSiz": (17, 17), "min_corr": 0.8, "min_pnr": 10, "fr": 20, "decay_time": 0.5,
            "method_init": "corr_pnr", "K": None, "nb": 0, "rf": None}
    scores = {}
    for mb in (1024.0, 120.0):
        opts = core.Options.from_main({**main, "memory_budget_mb": mb}, cnmfe=True)
        full = budget.corr_pnr_bytes(64 * 64, T, 1)
        assert (full > mb * budget.MiB) == (mb == 120.0)
        assert budget.corr_pnr_tsub(64 * 64, T, opts.n_samples, mb) == (1 if mb == 1024.0 else 2)
        fit = core.fit(Yr, (64, 64), opts, mmap_path=path)
        good = fit["idx_components"]
        scores[mb] = match_to_truth(fit["A"][:, good], fit["C"][good], sim.truth)
    assert scores[1024.0]["recall"] >= 0.8
    assert scores[120.0]["recall"] >= scores[1024.0]["recall"] - 0.1
    assert scores[120.0]["precision"] >= min(0.8, scores[1024.0]["precision"])
    # and past one decay's worth of averaging it still refuses at once, with the estimate
    opts = core.Options.from_main({**main, "memory_budget_mb": 8.0}, cnmfe=True)
    with pytest.raises(MemoryBudgetError, match=r"10 frames averaged.*memory_budget_mb=8"):
        core.check_budget((64, 64), T, opts)


def test_cnmfe_refuses_a_movie_whose_memmap_fits_the_disk_but_not_with_its_ring_background(tmp_path: Path):
    """The ring background of a long CNMF-E run goes to files beside the memmap (half the
    memmap's size at ssub_B 2): a movie whose memmap alone would fit, but not with them, is
    refused before anything is written, with the numbers."""
    import shutil

    from mesmerize_widgets.algorithms import RunContext
    from mesmerize_widgets.algorithms.cnmf.builtin import _preflight
    from mesmerize_widgets.errors import DiskSpaceError

    dims = (512, 512)
    free = shutil.disk_usage(tmp_path).free
    n = int(0.8 * free / (dims[0] * dims[1] * 4))  # the memmap takes 80 % of the free space
    opts = core.Options.from_main({"gSig": (3, 3), "method_init": "corr_pnr", "K": None, "nb": 0}, cnmfe=True)
    assert core.ring_scratch_bytes(dims, n, opts) > 0.25 * free
    ctx = RunContext(input_path=None, params={"main": {}}, output_dir=tmp_path, prefix="x")
    with pytest.raises(DiskSpaceError, match=r"memmap of \d+ frames and CNMF-E's ring background needs .* GiB free"):
        _preflight(ctx, dims, n, opts, seeded=True)
    assert not list(tmp_path.iterdir())
    opts_cnmf = core.Options.from_main({"gSig": (3, 3), "nb": 1})  # no ring model: nothing more to check
    assert core.ring_scratch_bytes(dims, n, opts_cnmf) == 0
    _preflight(ctx, dims, n, opts_cnmf, seeded=True)


def test_seeding_holds_the_region_about_three_times_whatever_its_length():
    """greedy_init's trend, squares and running sums are taken a block of rows at a time: beyond
    its input it holds its own copy, the blurred movie and blocks, not five copies (before)."""
    import tracemalloc

    sim = simulate_2p(n_frames=2000, dims=(96, 96), n_neurons=20, motion=None, seed=3)
    Y3 = np.ascontiguousarray(np.asarray(sim.movie, np.float32).transpose(1, 2, 0))
    opts = core.Options.from_main({"gSig": (4, 4), "fr": 30, "K": 10, "nb": 1, "rf": None})
    tracemalloc.start()
    try:
        A, _ = core.greedy_init(Y3, opts, 10, 12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3.2 * Y3.nbytes
    # and it still seeds the cells
    assert len(cells_found(sim.truth.A.toarray(), A)) >= 8
