"""mcorr: accuracy against simulated ground truth, CaImAn's file layout, accessors, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.algorithms import RunContext, get_algorithm
from mesmerize_widgets.algorithms.mcorr import builtin
from mesmerize_widgets.algorithms.mcorr.builtin import motion_centre
from mesmerize_widgets.algorithms.mcorr.common import crispness
from mesmerize_widgets.algorithms.mcorr.registration import cubic_weights, patch_centers
from mesmerize_widgets.arrays import MovieReadError
from mesmerize_widgets.sim import simulate_2p

DIMS = (128, 128)
PW = {"pw_rigid": True, "max_shifts": (6, 6), "strides": (48, 48), "overlaps": (24, 24), "niter_rig": 2}


@pytest.fixture(scope="module")
def rigid_sim():
    return simulate_2p(n_frames=250, dims=DIMS, n_neurons=40, motion="rigid", max_shift=4, seed=0)


@pytest.fixture(scope="module")
def pw_sim():
    return simulate_2p(n_frames=250, dims=DIMS, n_neurons=40, motion="piecewise", max_shift=4, seed=0)


def _run(path: Path, out: Path, params: dict, n_processes: int = 1) -> dict:
    params = get_algorithm("mcorr").schema.validate({"main": params})
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(input_path=path, params=params, output_dir=out, prefix="u", n_processes=n_processes)
    return builtin.run(ctx)


def _crispness(img: np.ndarray, border: int = 8) -> float:
    """CaImAn's crispness: the norm of the mean image's gradient (borders cut)."""
    img = img[border:-border, border:-border]
    return float(np.sqrt(np.sum(np.array(np.gradient(img)) ** 2)))


def _read_caiman_f(path: Path) -> np.ndarray:
    """Read an F-order memmap the way CaImAn lays it out: pixel p = row + col * d1."""
    m = re.search(r"_d1_(\d+)_d2_(\d+)_d3_1_order_F_frames_(\d+)\.mmap$", path.name)
    d1, d2, T = (int(v) for v in m.groups())
    Yr = np.fromfile(path, dtype="<f4").reshape(T, d1 * d2).T  # (P, T) as caiman.load_memmap
    return np.reshape(Yr.T, (T, d1, d2), order="F")


def _rms_without_offset(err: np.ndarray) -> float:
    err = err - err.mean(axis=0, keepdims=True)
    return float(np.sqrt(np.mean(err**2)))


def test_rigid_accuracy_layout_and_crispness(tmp_path, rigid_sim):
    tifffile.imwrite(tmp_path / "m.tif", rigid_sim.movie)
    out = _run(tmp_path / "m.tif", tmp_path / "out", {"max_shifts": (6, 6), "niter_rig": 2})
    assert out["mcorr-output-path"].name == "u_rig__d1_128_d2_128_d3_1_order_F_frames_250.mmap"
    assert out["shifts"].name == "u_shifts.npy"
    shifts = np.load(out["shifts"])
    assert shifts.shape == (250, 2)
    # the registering shifts match the truth up to the constant offset of the template
    err = shifts - rigid_sim.truth.shifts
    assert _rms_without_offset(err) <= 0.1, _rms_without_offset(err)
    mov = _read_caiman_f(out["mcorr-output-path"])
    assert mov.shape == (250, *DIMS)
    # nonneg_movie: min of the first 400 frames subtracted, as CaImAn
    np.testing.assert_allclose(mov.min(), 0.0, atol=float(rigid_sim.movie.max()) * 0.05)
    mean = np.load(out["mean-projection-path"])
    np.testing.assert_allclose(mean, mov.mean(0), rtol=1e-4, atol=1e-3)
    assert _crispness(mean) > 1.1 * _crispness(rigid_sim.movie.mean(0))
    assert np.load(out["corr-img-path"]).shape == DIMS


def test_parallel_workers_match_serial(tmp_path, rigid_sim):
    tifffile.imwrite(tmp_path / "m.tif", rigid_sim.movie[:60])
    params = {"max_shifts": (6, 6), "chunk_frames": 16, "splits_rig": 4}
    one = _run(tmp_path / "m.tif", tmp_path / "a", params, n_processes=1)
    two = _run(tmp_path / "m.tif", tmp_path / "b", params, n_processes=2)
    # equal up to float rounding (workers run single-threaded BLAS)
    np.testing.assert_allclose(np.load(one["shifts"]), np.load(two["shifts"]), atol=1e-3)
    np.testing.assert_allclose(np.fromfile(one["mcorr-output-path"], "<f4"),
                               np.fromfile(two["mcorr-output-path"], "<f4"), atol=0.05, rtol=1e-3)
    np.testing.assert_allclose(np.load(one["corr-img-path"]),
                               np.load(two["corr-img-path"]), atol=1e-5)


@pytest.mark.usefixtures("client")
def test_piecewise_end_to_end_through_the_batch(batch, raw_dir, pw_sim, tmp_path):
    tifffile.imwrite(raw_dir / "pw.tif", pw_sim.movie)
    params = {"main": {**PW, "fr": 30.0, "decay_time": 0.4, "dxy": (1.0, 1.0)}}
    row = batch.caiman.add_item("mcorr", "pw", "pw.tif", params)
    row.caiman.run(progress=False)
    assert row["status"] == "done", row["error"]
    path = row.mcorr.get_output_path()
    assert path.name == f"{row['uuid']}_els__d1_128_d2_128_d3_1_order_F_frames_250.mmap"
    assert path.parent.name == row["uuid"]
    movie = row.mcorr.get_output()
    assert movie.shape == (250, *DIMS)
    np.testing.assert_array_equal(movie[10:13], _read_caiman_f(path)[10:13])
    xs, ys = row.mcorr.get_shifts(pw_rigid=True)
    rows, cols = patch_centers(DIMS, PW["strides"], PW["overlaps"])
    assert xs.shape == ys.shape == (250, len(rows) * len(cols))
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    truth = np.stack([pw_sim.truth.shift_at(t, rr.ravel(), cc.ravel()) for t in range(250)])
    err = np.stack([xs, ys], axis=1) - truth  # (T, 2, n_patches)
    err = err.transpose(0, 2, 1).reshape(-1, 2)
    assert _rms_without_offset(err) <= 0.3, _rms_without_offset(err)
    with pytest.raises(ValueError, match="piecewise"):
        row.mcorr.get_shifts(pw_rigid=False)
    mean = row.caiman.get_projection("mean")
    assert _crispness(mean) > _crispness(pw_sim.movie.mean(0))
    assert row.caiman.get_corr_image().shape == DIMS
    # export streams a multi-page TIFF
    tif = row.mcorr.export(tmp_path / "exported.tif")
    back = tifffile.imread(tif)
    assert back.shape == (250, *DIMS)
    np.testing.assert_array_equal(back[200], movie[200])
    # another item can take the mcorr item as its input (cnmf after mcorr)
    child = batch.caiman.add_item("summary", "after mcorr", row, {"main": {}})
    assert child["input_movie_path"].endswith("_order_F_frames_250.mmap")


@pytest.mark.usefixtures("client")
def test_rigid_shifts_accessor_and_writable_view(batch, raw_dir):
    movie = simulate_2p(n_frames=40, dims=(48, 48), n_neurons=8, motion="rigid", max_shift=2).movie
    tifffile.imwrite(raw_dir / "r.tif", movie)
    row = batch.caiman.add_item("mcorr", "r", "r.tif", {"main": {"max_shifts": (4, 4)}})
    row.caiman.run(progress=False)
    assert row["status"] == "done", row["error"]
    assert row.mcorr.get_output_path().name.startswith(f"{row['uuid']}_rig__d1_48_d2_48")
    dy, dx = row.mcorr.get_shifts(pw_rigid=False)
    assert dy.shape == dx.shape == (40,)
    view = row.mcorr.get_output(mode="r+")
    assert view.shape == (40, 48, 48)
    np.testing.assert_array_equal(view[5], row.mcorr.get_output()[5])
    with pytest.raises(ValueError, match="mcorr items"):
        batch.caiman.add_item("summary", "s", "r.tif", {"main": {}}).mcorr.get_output_path()


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "main, message",
    [
        ({"max_shifts": (6, 6, 6)}, "'max_shifts'.*2 elements"),
        ({"strides": (0, 48)}, "'strides'.*>= 1"),
        ({"border_nan": "reflect"}, "'border_nan'.*one of"),
        ({"indices": ((10, 5), None)}, "'indices'"),
        ({"max_shift": (6, 6)}, "did you mean"),
        ({"gSig_filt": (0, 0)}, "'gSig_filt'.*>= 1"),
    ],
)
def test_bad_params_are_refused_when_added(main, message):
    with pytest.raises(mw.ParamError, match=message):
        get_algorithm("mcorr").schema.validate({"main": main})


def test_caiman_spellings_are_normalised():
    out = get_algorithm("mcorr").schema.validate(
        {"main": {"gSig_filt": 3, "indices": (slice(None), slice(0, 64)), "border_nan": 1, "max_shifts": [8, 8]}}
    )["main"]
    assert out == {"gSig_filt": (3, 3), "indices": ((None, None), (0, 64)), "border_nan": True, "max_shifts": (8, 8)}


def _small(tmp_path: Path, movie: np.ndarray, name: str = "s.tif") -> Path:
    tifffile.imwrite(tmp_path / name, movie)
    return tmp_path / name


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_shifts": (40, 6)}, r"max_shifts \(40, 6\) does not fit the 64x64 frame"),
        ({"pw_rigid": True, "strides": (64, 48), "overlaps": (16, 16)}, r"strides \(64, 48\) \+ overlaps .* 80x64 patches, larger than the 64x64 frame"),
    ],
)
def test_params_that_do_not_fit_the_frame(tmp_path, params, message):
    path = _small(tmp_path, np.random.default_rng(0).normal(100, 5, (20, 64, 64)).astype(np.float32))
    with pytest.raises(ValueError, match=message):
        _run(path, tmp_path / "o", params)
    assert not list((tmp_path / "o").glob("*.mmap"))


def test_single_image_nan_dtype_and_unreadable(tmp_path):
    img = np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32)
    np.save(tmp_path / "img.npy", img)
    with pytest.raises(ValueError, match="single image|single 64x64 image|at least 2 frames"):
        _run(tmp_path / "img.npy", tmp_path / "o1", {})
    m = np.random.default_rng(0).normal(100, 5, (30, 64, 64)).astype(np.float32)
    m[17, 3, 4] = np.nan
    with pytest.raises(ValueError, match="frame 17 .*NaN"):
        _run(_small(tmp_path, m, "nan.tif"), tmp_path / "o2", {})
    assert not list((tmp_path / "o2").iterdir())  # the partial output is removed
    np.save(tmp_path / "c.npy", np.ones((10, 32, 32), np.complex64))
    with pytest.raises(ValueError, match="integer or float pixels.*complex64"):
        _run(tmp_path / "c.npy", tmp_path / "o3", {})
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(MovieReadError):
        _run(tmp_path / "junk.tif", tmp_path / "o4", {})


def test_truncated_memmap_is_an_error(tmp_path):
    from mesmerize_widgets.formats.memmap import save_memmap

    p = save_memmap(np.ones((20, 32, 32), np.float32), tmp_path, "mov", order="F")
    with open(p, "r+b") as fh:
        fh.truncate(p.stat().st_size // 2)
    with pytest.raises(ValueError, match="truncated"):
        _run(p, tmp_path / "o", {})


def test_constant_frames_get_zero_shift(tmp_path, rigid_sim):
    m = rigid_sim.movie[:60].copy()
    m[20:23] = 123.0
    out = _run(_small(tmp_path, m), tmp_path / "o", {"max_shifts": (6, 6)})
    shifts = np.load(out["shifts"])
    np.testing.assert_array_equal(shifts[20:23], 0.0)
    assert np.isfinite(np.load(out["corr-img-path"])).all()
    flat = _run(_small(tmp_path, np.full((12, 32, 32), 7.0, np.float32), "flat.tif"), tmp_path / "f", {})
    np.testing.assert_array_equal(np.load(flat["shifts"]), 0.0)
    assert np.all(np.fromfile(flat["mcorr-output-path"], "<f4") == 0.0)


def test_border_nan_true_and_1p_highpass(tmp_path):
    from mesmerize_widgets.sim import simulate_1p

    sim = simulate_1p(n_frames=80, dims=(96, 96), motion="rigid", max_shift=3)
    path = _small(tmp_path, sim.movie)
    out = _run(path, tmp_path / "o", {"gSig_filt": (3, 3), "border_nan": True, "max_shifts": (5, 5)})
    mov = _read_caiman_f(out["mcorr-output-path"])
    assert np.isnan(mov).any() and np.isfinite(mov[:, 10:-10, 10:-10]).all()
    assert np.isfinite(np.load(out["mean-projection-path"])).all()
    err = np.load(out["shifts"]) - sim.truth.shifts
    assert _rms_without_offset(err) <= 0.3


@pytest.mark.caiman
@pytest.mark.parametrize("pw_rigid", [False, True], ids=["rigid", "piecewise"])
def test_caiman_backend_writes_the_same_files(tmp_path, rigid_sim, pw_sim, pw_rigid):
    pytest.importorskip("caiman.source_extraction")
    from mesmerize_widgets.algorithms.mcorr import caiman as caiman_backend

    sim = pw_sim if pw_rigid else rigid_sim
    path = _small(tmp_path, sim.movie[:100])
    main = {**PW, "niter_rig": 1} if pw_rigid else {"max_shifts": (6, 6)}
    params = get_algorithm("mcorr").schema.validate({"main": main})
    ctx = RunContext(input_path=path, params=params, output_dir=tmp_path / "o", prefix="u")
    (tmp_path / "o").mkdir()
    out = caiman_backend.run(ctx)
    kind = "els" if pw_rigid else "rig"
    assert out["mcorr-output-path"] == tmp_path / "o" / f"u_{kind}__d1_128_d2_128_d3_1_order_F_frames_100.mmap"
    assert sorted(f.name for f in (tmp_path / "o").glob("*.mmap")) == [out["mcorr-output-path"].name]
    mov = _read_caiman_f(out["mcorr-output-path"])
    assert mov.shape == (100, *DIMS) and np.isfinite(mov).all()
    for key in ("mean-projection-path", "std-projection-path", "max-projection-path", "corr-img-path"):
        img = np.load(out[key])
        assert img.shape == DIMS and np.isfinite(img).all(), key
    np.testing.assert_allclose(np.load(out["mean-projection-path"]), mov.mean(0), rtol=1e-4, atol=1e-3)
    shifts = np.load(out["shifts"])
    if not pw_rigid:
        assert shifts.shape == (100, 2)
        assert _rms_without_offset(shifts - sim.truth.shifts[:100]) <= 0.2
        return
    # our documented layout (2, T, n_patches), patches in C order of patch_grid, as the builtin's
    rows, cols = patch_centers(DIMS, PW["strides"], PW["overlaps"])
    assert shifts.shape == (2, 100, len(rows) * len(cols))
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    truth = np.stack([sim.truth.shift_at(t, rr.ravel(), cc.ravel()) for t in range(100)])
    err = (shifts.transpose(1, 0, 2) - truth).transpose(0, 2, 1).reshape(-1, 2)
    assert _rms_without_offset(err) <= 0.5, _rms_without_offset(err)


# -- large drift: the template at the centre of the motion -----------------------------------------
DRIFT_MS = (8, 8)  # max_shifts; the true motion spans +-6 px around its centre (max_shifts - 2)


def _drift(kind: str, T: int, amp: float) -> np.ndarray:
    """Registering shifts (T, 2) of a slow drift spanning [-amp, amp] per axis, starting at one end.

    ``ramp``: both axes drift monotonically from one end to the other (most frames away from
    frame 0); ``step``: 80% of the movie at one corner, the rest at the opposite one. A template
    from frame 0 or from the majority of frames leaves the other end ~2 * amp px away.
    """
    t = np.linspace(0.0, 1.0, T)
    if kind == "ramp":
        y = -amp + 2 * (amp - 0.5) * (0.5 - 0.5 * np.cos(np.pi * t)) + 0.5 * np.sin(2 * np.pi * 3.1 * t)
        x = (amp - 0.5) - 2 * (amp - 0.5) * t**1.5 + 0.5 * np.sin(2 * np.pi * 4.3 * t + 1)
    else:
        y = np.where(t < 0.8, -amp + 0.3 * np.sin(2 * np.pi * 5 * t), amp - 0.5)
        x = np.where(t < 0.8, amp - 1, -amp + 0.3 * np.sin(2 * np.pi * 4.3 * t + 1))
    return np.stack([y, x], axis=1)


def _drifting_movie(kind: str, T: int = 300, amp: float = 6.0, nonrigid: float = 0.0):
    """(movie, rigid drift, simulation, pad): the simulator's noiseless movie on a larger field,
    translated by the drift (exact separable cubic shifts) and cropped, then Poisson-Gaussian noise.

    ``registered(q) = frame(q - s)`` holds with ``s`` = drift (+ the simulation's own field at
    ``q + pad`` when ``nonrigid``), the convention of the saved shifts.
    """
    pad = int(np.ceil(amp)) + 3
    big = (DIMS[0] + 2 * pad, DIMS[1] + 2 * pad)
    motion = {"motion": "piecewise", "max_shift": nonrigid, "nonrigid_amplitude": nonrigid} if nonrigid else {"motion": None}
    sim = simulate_2p(n_frames=T, dims=big, n_neurons=int(40 * big[0] * big[1] / DIMS[0] / DIMS[1]), seed=0,
                      lazy=True, **motion)
    clean = sim.render(noise=False)
    d = _drift(kind, T, amp)
    movie = np.empty((T, *DIMS), np.float32)
    for i, (sy, sx) in enumerate(d):  # frame(r) = clean(r + pad + d)
        ny, nx = int(np.floor(sy)), int(np.floor(sx))
        src = clean[i, pad + ny - 1 : pad + ny + DIMS[0] + 2, pad + nx - 1 : pad + nx + DIMS[1] + 2]
        full = cv2.sepFilter2D(src, -1, cubic_weights(sx - nx), cubic_weights(sy - ny), anchor=(1, 1))
        movie[i] = full[1 : 1 + DIMS[0], 1 : 1 + DIMS[1]]
    rng = np.random.default_rng(1)
    movie += rng.standard_normal(movie.shape).astype(np.float32) * np.sqrt(16.0 + np.maximum(movie - 100.0, 0.0))
    return movie, d, sim, pad


@pytest.mark.parametrize("kind", ["ramp", "step"])
def test_rigid_follows_a_drift_that_fills_max_shifts(tmp_path, kind):
    movie, d, _, _ = _drifting_movie(kind)
    out = _run(_small(tmp_path, movie), tmp_path / "o", {"max_shifts": DRIFT_MS, "niter_rig": 2})
    shifts = np.load(out["shifts"])
    assert shifts.shape == d.shape
    # the template is at the centre of the motion: the shifts' range is centred on 0, so no
    # shift reaches max_shifts (a frame-0 or majority template put the far end at the bound)
    assert np.abs(motion_centre(shifts)).max() <= 0.5, motion_centre(shifts)
    assert np.abs(shifts).max() < DRIFT_MS[0] - 1
    # the template's position is arbitrary: errors are compared after removing their mean
    err = _rms_without_offset(shifts - d)
    assert err <= 0.1, err


@pytest.mark.parametrize("kind", ["ramp", "step"])
def test_piecewise_follows_a_drift_that_fills_max_shifts(tmp_path, kind):
    nonrigid = 0.5  # drift +-5.5 plus the field: motion within +-6 px of its centre
    movie, d, sim, pad = _drifting_movie(kind, amp=6.0 - nonrigid, nonrigid=nonrigid)
    params = {**PW, "max_shifts": DRIFT_MS, "max_deviation_rigid": 3}
    out = _run(_small(tmp_path, movie), tmp_path / "o", params)
    shifts = np.load(out["shifts"])  # (2, T, n_patches)
    rows, cols = patch_centers(DIMS, PW["strides"], PW["overlaps"])
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    truth = np.stack([sim.truth.shift_at(t, rr.ravel() + pad, cc.ravel() + pad) for t in range(len(d))])
    truth += d[:, :, None]
    assert shifts.shape == (2, len(d), rr.size)
    assert np.abs(shifts).max() < DRIFT_MS[0]
    # constant offset removed, as for rigid shifts (the reference is the template's position)
    err = (shifts.transpose(1, 0, 2) - truth).transpose(0, 2, 1).reshape(-1, 2)
    assert _rms_without_offset(err) <= 0.2, _rms_without_offset(err)


# -- crispness ------------------------------------------------------------------------------------
def test_crispness_measures_blur_not_intensity():
    img = simulate_2p(n_frames=20, dims=(96, 96), motion=None, seed=3).movie.mean(0)
    # blur as motion does it: the mean of copies shifted along a +-3 px path; more blur, less crisp
    smeared = [np.mean([np.roll(img, k, axis=1) for k in range(-a, a + 1)], axis=0) for a in (1, 3)]
    values = [crispness(x) for x in (img, *smeared)]
    assert values[0] > 1.05 * values[1] > 1.05 * values[2], values
    # independent of the intensity scale and offset (the corrected movie has min_mov subtracted)
    assert crispness(3.0 * img - 50.0) == pytest.approx(crispness(img), rel=1e-6)
    assert crispness(np.full((40, 40), 5.0)) == 0.0
    # white noise: the gradient's variance equals the image's (central differences)
    noise = np.random.default_rng(0).standard_normal((400, 400))
    assert crispness(noise) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="2-D"):
        crispness(np.zeros((3, 40, 40)))


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.mark.skipif(not REAL.exists(), reason=f"real recordings not found at {REAL} (../shared/data/real)")
@pytest.mark.parametrize(
    "rel, dataset, pw_rigid",
    [
        ("neurofinder-01.01-crop/movie.tif", None, False),
        ("neurofinder-01.01-crop/movie.tif", None, True),
        ("allen-ophys-crops/movie_100x100x100.h5", "data", False),
        ("allen-ophys-crops/movie_100x100x100.h5", "data", True),
    ],
)
def test_real_movies_come_out_crisper(tmp_path, rel, dataset, pw_rigid):
    from mesmerize_widgets.arrays import open_movie

    path = REAL / rel
    main = {"max_shifts": (6, 6), **({"var_name_hdf5": dataset} if dataset else {})}
    if pw_rigid:
        main.update(pw_rigid=True, strides=(48, 48), overlaps=(24, 24))
    out = _run(path, tmp_path / "o", main)
    raw = np.asarray(open_movie(path, var_name_hdf5=dataset)[:], dtype=np.float64).mean(axis=0)
    corrected = np.load(out["mean-projection-path"])
    assert corrected.shape == raw.shape
    assert crispness(corrected) > 1.01 * crispness(raw), (crispness(corrected), crispness(raw))


@pytest.mark.skipif(not REAL.exists(), reason=f"real recordings not found at {REAL} (../shared/data/real)")
def test_allen_registration_fixture_is_structureless(tmp_path):
    """The Allen suite2p fixture ``792757260_test_data.h5`` (``input_frames``) holds no image:
    neighbouring pixels are uncorrelated, its mean image has the crispness of white noise, so
    any 'improvement' there would be registration fitting noise; only check that it runs."""
    from mesmerize_widgets.arrays import open_movie

    path = REAL / "allen-ophys-crops" / "792757260_test_data.h5"
    raw = np.asarray(open_movie(path, var_name_hdf5="input_frames")[:], dtype=np.float64)
    assert crispness(raw.mean(axis=0)) == pytest.approx(1.0, abs=0.05)
    out = _run(path, tmp_path / "o", {"max_shifts": (6, 6), "var_name_hdf5": "input_frames"})
    assert np.load(out["shifts"]).shape == (100, 2)
    assert np.isfinite(np.load(out["mean-projection-path"])).all()


@pytest.mark.caiman
def test_caiman_backend_reads_the_named_hdf5_dataset(tmp_path, rigid_sim):
    """CaImAn's MotionCorrect looks for a dataset 'mov' unless told: an HDF5 file holding several
    datasets must be read through var_name_hdf5."""
    pytest.importorskip("caiman.source_extraction")
    import h5py

    from mesmerize_widgets.algorithms.mcorr import caiman as caiman_backend

    movie = np.asarray(rigid_sim.movie[:60], np.float32)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f["reference"] = movie[0]
        f["frames"] = movie
    params = get_algorithm("mcorr").schema.validate({"main": {"max_shifts": (6, 6), "var_name_hdf5": "frames"}})
    (tmp_path / "o").mkdir()
    out = caiman_backend.run(RunContext(input_path=path, params=params, output_dir=tmp_path / "o", prefix="u"))
    assert out["mcorr-output-path"].name == "u_rig__d1_128_d2_128_d3_1_order_F_frames_60.mmap"
    err = np.load(out["shifts"]) - rigid_sim.truth.shifts[:60]
    assert _rms_without_offset(err) <= 0.3
