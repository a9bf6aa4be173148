"""NWB: export of real cnmf / cnmfe items checked by pynwb and nwbinspector, read back equal to
``row.cnmf``; NWB imaging series as input movies, read lazily; bad input that writes nothing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# the viewers on NWB input render offscreen (lavapipe), as in test_viewers
os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

import numpy as np
import pytest
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.arrays import MovieReadError, open_movie
from mesmerize_widgets.errors import FileBusyError, MissingExtraError, NWBExportError
from mesmerize_widgets.sim import simulate_1p, simulate_2p
from mesmerize_widgets.store import paths as store_paths

pynwb = pytest.importorskip("pynwb")
nwbinspector = pytest.importorskip("nwbinspector")

SUBJECT = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}
SESSION = {"session_start_time": dt.datetime(2024, 5, 2, 10, 30, tzinfo=dt.UTC), "subject": SUBJECT}
PLANE = {"indicator": "GCaMP6f", "location": "VISp", "excitation_lambda": 920.0, "emission_lambda": 520.0}
BAD = ("CRITICAL", "BEST_PRACTICE_VIOLATION")


def check_file(path: Path) -> None:
    """pynwb's schema validation and nwbinspector: nothing critical, no best-practice violation."""
    assert pynwb.validate(path=str(path)) == []
    bad = [f"{m.importance.name} {m.check_function_name}: {m.message} ({m.object_name})"
           for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(path)) if m.importance.name in BAD]
    assert not bad, bad


def image_masks(seg) -> np.ndarray:
    """The PlaneSegmentation's image_mask column as (x, y, K)."""
    return np.stack([seg["image_mask"][i] for i in range(len(seg.id))], axis=-1)


def dense_pixel_masks(seg, dims) -> np.ndarray:
    out = np.zeros((*dims, len(seg.id)), np.float32)
    for k in range(len(seg.id)):
        for x, y, w in seg["pixel_mask"][k]:
            out[x, y, k] = w
    return out


def dense_A(row, dims) -> np.ndarray:
    A = row.cnmf.get_output(return_copy=False).estimates.A
    K = A.shape[1]
    return np.asarray(A.toarray(), np.float32).reshape((*dims, K), order="F")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def done(tmp_path_factory, client):
    """One batch, run once: mcorr -> cnmf (dF/F computed) and a cnmfe item, small and real."""
    root = tmp_path_factory.mktemp("nwb")
    raw = root / "raw"
    raw.mkdir()
    mw.set_parent_raw_data_path(raw)
    sim = simulate_2p(n_frames=200, dims=(48, 48), n_neurons=8, motion="rigid", max_shift=2, seed=0)
    tifffile.imwrite(raw / "2p.tif", sim.movie)
    tifffile.imwrite(raw / "1p.tif", simulate_1p(n_frames=200, dims=(48, 48), n_neurons=8, seed=2).movie)
    df = mw.create_batch(root / "batch")
    mc = df.caiman.add_item("mcorr", "mc", "2p.tif", {"main": {"max_shifts": (4, 4)}})
    df.caiman.add_item("cnmf", "cnmf", mc, {"main": {"K": 10, "gSig": (3, 3), "p": 1, "fr": 30.0}})
    df.caiman.add_item("cnmfe", "cnmfe", "1p.tif", {"main": {"gSig": (3, 3), "gSiz": (13, 13), "fr": 20.0}})
    df.caiman.run(progress=False)
    assert list(df["status"]) == ["done"] * 3, list(df["error"])
    df.iloc[1].cnmf.run_detrend_dfof()
    yield df, root
    store_paths._parent_raw_data_path = None


def test_export_reads_back_what_row_cnmf_returns(done):
    df, root = done
    row = df.iloc[1]
    path = row.cnmf.export_nwb(root / "cnmf.nwb", session=SESSION, imaging_plane=PLANE)
    check_file(path)
    dims = row.caiman.get_projection("mean").shape
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        ophys = f.processing["ophys"]
        seg = ophys["ImageSegmentation"]["PlaneSegmentation"]
        assert "pixel_mask" in seg.colnames  # sparse footprints: the smaller column
        np.testing.assert_array_equal(dense_pixel_masks(seg, dims), dense_A(row, dims))
        np.testing.assert_array_equal(np.flatnonzero(seg["accepted"][:]), row.cnmf.get_good_components())
        e = row.cnmf.get_output(return_copy=False).estimates
        np.testing.assert_array_equal(seg["SNR_comp"][:], e.SNR_comp)
        np.testing.assert_array_equal(seg["r_values"][:], e.r_values)
        fl = ophys["Fluorescence"]
        np.testing.assert_array_equal(fl["RoiResponseSeries"].data[:].T, row.cnmf.get_temporal())
        assert "C (denoised" in fl["RoiResponseSeries"].description
        np.testing.assert_array_equal(fl["Deconvolved"].data[:].T, e.S)
        np.testing.assert_array_equal(ophys["DfOverF"]["RoiResponseSeries"].data[:].T, row.cnmf.get_detrend_dfof())
        imgs = ophys["SummaryImages"]
        np.testing.assert_array_equal(imgs["mean"].data[:], row.caiman.get_projection("mean"))
        np.testing.assert_array_equal(imgs["correlation"].data[:], row.caiman.get_corr_image())
        mc = df.iloc[0]
        np.testing.assert_array_equal(ophys["MotionCorrectionShifts"].data[:], np.stack(mc.mcorr.get_shifts(), -1))
        assert "MotionCorrectedMovie" not in ophys.data_interfaces  # only on request
        plane = f.imaging_planes["ImagingPlane"]
        assert (plane.indicator, plane.location, plane.imaging_rate) == ("GCaMP6f", "VISp", 30.0)
        assert f.session_start_time == SESSION["session_start_time"] and f.subject.subject_id == "m1"


def test_image_masks_residuals_and_the_corrected_movie(done):
    df, root = done
    row = df.iloc[1]
    path = row.cnmf.export_nwb(root / "movie.nwb", session=SESSION, imaging_plane=PLANE, mask_type="image",
                               add_residuals=True, include_movie=True, chunk_frames=32)
    check_file(path)
    dims = row.caiman.get_projection("mean").shape
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        ophys = io.read().processing["ophys"]
        seg = ophys["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(image_masks(seg), dense_A(row, dims))
        np.testing.assert_array_equal(ophys["Fluorescence"]["RoiResponseSeries"].data[:].T,
                                      row.cnmf.get_temporal(add_residuals=True))
        np.testing.assert_array_equal(ophys["MotionCorrectedMovie"].data[:], df.iloc[0].mcorr.get_output()[:])
    # the exported movie is an input movie again
    movie = open_movie(path, var_name_hdf5="MotionCorrectedMovie")
    np.testing.assert_array_equal(movie[[3, 150]], df.iloc[0].mcorr.get_output()[[3, 150]])


def test_cnmfe_export_has_the_pnr_image(done):
    df, root = done
    row = df.iloc[2]
    path = row.cnmf.export_nwb(root / "cnmfe.nwb", session=SESSION, imaging_plane=PLANE)
    check_file(path)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        ophys = io.read().processing["ophys"]
        np.testing.assert_array_equal(ophys["SummaryImages"]["pnr"].data[:], row.caiman.get_pnr_image())
        np.testing.assert_array_equal(ophys["Fluorescence"]["RoiResponseSeries"].data[:].T, row.cnmf.get_temporal())
        assert "MotionCorrectionShifts" not in ophys.data_interfaces  # no mcorr input
        assert ophys["Fluorescence"]["RoiResponseSeries"].rate == 20.0


def acquisition_file(path: Path, movie: np.ndarray, **kw) -> None:
    """What a lab's acquisition file holds: the session, the subject, the raw TwoPhotonSeries."""
    from pynwb.file import Subject
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    nwb = pynwb.NWBFile(session_description="acquisition", identifier="lab-0001",
                        session_start_time=SESSION["session_start_time"], subject=Subject(**SUBJECT))
    device = nwb.create_device(name="Scope", description="two-photon microscope")
    plane = nwb.create_imaging_plane(
        name="Plane0", optical_channel=OpticalChannel(name="green", description="green", emission_lambda=520.0),
        description="layer 2/3", device=device, excitation_lambda=920.0, imaging_rate=30.0,
        indicator="GCaMP6f", location="VISp")
    nwb.add_acquisition(TwoPhotonSeries(name="TwoPhotonSeries", imaging_plane=plane, rate=30.0, unit="n.a.",
                                        description="raw movie", **({"data": movie} if movie is not None else kw)))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_append_to_the_sessions_acquisition_file(done):
    df, root = done
    row = df.iloc[1]
    path = root / "session.nwb"
    raw = open_movie(df.iloc[0].caiman.get_input_movie_path())[:]
    acquisition_file(path, raw)
    row.cnmf.export_nwb(path)  # no session metadata needed: the file has it
    check_file(path)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        assert f.identifier == "lab-0001" and f.subject.subject_id == "m1"
        np.testing.assert_array_equal(f.acquisition["TwoPhotonSeries"].data[:], raw)
        seg = f.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert seg.imaging_plane.name == "Plane0"  # the file's only plane is reused
        np.testing.assert_array_equal(f.processing["ophys"]["Fluorescence"]["RoiResponseSeries"].data[:].T,
                                      row.cnmf.get_temporal())
    before = path.read_bytes()
    with pytest.raises(NWBExportError, match="already holds"):
        row.cnmf.export_nwb(path)
    with pytest.raises(NWBExportError, match="session_start_time"):
        row.cnmf.export_nwb(path, session={"session_start_time": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)})
    assert path.read_bytes() == before and files_in(root).count("session.nwb") == 1
    assert not [n for n in files_in(root) if n.endswith(".tmp.nwb")]


def test_df_export_nwb_one_file_per_item(done):
    df, root = done
    paths = df.caiman.export_nwb(root / "all", session=SESSION, imaging_plane=PLANE)
    assert [p.name for p in paths] == [f"{df.iloc[i]['uuid']}.nwb" for i in (1, 2)]
    for p in paths:
        check_file(p)
    with pytest.raises(NWBExportError, match="'mcorr' item"):
        df.caiman.export_nwb(root / "none", items=[0, 1], session=SESSION)
    assert not (root / "none").exists()


def test_bad_exports_write_nothing(done, tmp_path):
    df, root = done
    row = df.iloc[1]
    with pytest.raises(NWBExportError, match="session_start_time"):
        row.cnmf.export_nwb(tmp_path / "a.nwb", session={"subject": SUBJECT})
    with pytest.raises(NWBExportError, match="subject"):
        row.cnmf.export_nwb(tmp_path / "a.nwb", session={"session_start_time": SESSION["session_start_time"]})
    with pytest.raises(NWBExportError, match="no motion-correction"):
        df.iloc[2].cnmf.export_nwb(tmp_path / "a.nwb", session=SESSION, include_movie=True)
    pending = df.caiman.add_item("cnmf", "pending", df.iloc[0], {"main": {"K": 4}})
    with pytest.raises(NWBExportError, match="'pending', not done"):
        pending.cnmf.export_nwb(tmp_path / "a.nwb", session=SESSION)
    df.caiman.remove_item(len(df) - 1)
    assert files_in(tmp_path) == []


def test_a_file_open_elsewhere_for_writing_is_refused(done, tmp_path):
    df, _ = done
    path = tmp_path / "busy.nwb"
    acquisition_file(path, np.zeros((40, 8, 8), np.int16))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True); "
         "time.sleep(60)", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        before = path.read_bytes()  # as the holder has it (opening for writing marks the superblock)
        with pytest.raises(FileBusyError, match="open elsewhere for writing"):
            df.iloc[1].cnmf.export_nwb(path)
        assert path.read_bytes() == before and files_in(tmp_path) == ["busy.nwb"]
    finally:
        holder.kill()
        holder.wait()


def test_missing_extra_names_it(done, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)  # what an environment without the extra sees
    with pytest.raises(MissingExtraError, match=r'pip install "mesmerize-widgets\[nwb\]"'):
        done[0].iloc[1].cnmf.export_nwb(tmp_path / "x.nwb", session=SESSION)
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------------
# NWB as input
# --------------------------------------------------------------------------------------------
@pytest.fixture
def nwb_inputs(raw_dir):
    movie = simulate_2p(n_frames=120, dims=(40, 40), n_neurons=6, motion="rigid", max_shift=2, seed=4).movie
    movie = np.asarray(movie, np.float32)
    acquisition_file(raw_dir / "in.nwb", movie)
    tifffile.imwrite(raw_dir / "part0.tif", movie[:50])
    tifffile.imwrite(raw_dir / "part1.tif", movie[50:])
    acquisition_file(raw_dir / "ext.nwb", None, external_file=["part0.tif", "part1.tif"], starting_frame=[0, 50],
                     format="external", num_samples=len(movie), dimension=[40, 40])
    return movie


@pytest.mark.usefixtures("client")
def test_nwb_series_as_input_movies(batch, raw_dir, nwb_inputs):
    movie = nwb_inputs
    check_file(raw_dir / "ext.nwb")
    for name in ("in.nwb", "ext.nwb"):
        np.testing.assert_array_equal(open_movie(raw_dir / name, "TwoPhotonSeries")[[0, 77, 119]], movie[[0, 77, 119]])
    params = {"main": {"max_shifts": (4, 4), "var_name_hdf5": "TwoPhotonSeries"}}
    batch.caiman.add_item("mcorr", "nwb", "in.nwb", params)
    batch.caiman.add_item("mcorr", "external", "ext.nwb", params)
    batch.caiman.add_item("cnmf", "cnmf on nwb", "in.nwb",
                          {"main": {"K": 6, "gSig": (3, 3), "p": 1, "var_name_hdf5": "TwoPhotonSeries"}})
    batch.caiman.run(progress=False)
    assert list(batch["status"]) == ["done"] * 3, list(batch["error"])
    a, b = batch.iloc[0], batch.iloc[1]
    np.testing.assert_array_equal(a.caiman.get_input_movie()[:], movie)  # what the viewers show
    np.testing.assert_array_equal(a.mcorr.get_output()[:], b.mcorr.get_output()[:])
    assert a.mcorr.get_output().shape == movie.shape
    assert batch.iloc[2].cnmf.get_n_components() > 0
    _viewers_show_the_nwb_frames(a, batch.iloc[2], movie)


def _viewers_show_the_nwb_frames(mcorr_row, cnmf_row, movie: np.ndarray) -> None:
    """The viewers, rendered offscreen, step through an NWB input as through any movie."""
    pytest.importorskip("fastplotlib")
    from mesmerize_widgets.widgets import CNMFViewer, McorrViewer

    for viewer in (McorrViewer(mcorr_row), CNMFViewer(cnmf_row)):
        try:
            viewer.set_time(77)
            np.testing.assert_array_equal(viewer.shown_frame(0), movie[77])
            assert viewer.snapshot(0).std() > 0  # something was drawn
        finally:
            viewer.close()


def test_reading_one_frame_reads_only_that_frame(raw_dir):
    """The bytes this process reads from files (Linux's rchar) while indexing one frame."""
    if not Path("/proc/self/io").exists():
        pytest.skip("needs Linux's /proc/self/io")
    movie = np.random.default_rng(0).random((400, 64, 64)).astype(np.float32)  # 6.5 MB
    acquisition_file(raw_dir / "big.nwb", movie)
    lazy = open_movie(raw_dir / "big.nwb")

    def rchar() -> int:
        text = Path("/proc/self/io").read_text()
        return int(next(line for line in text.splitlines() if line.startswith("rchar")).split()[1])

    lazy[200]  # warm up imports and metadata caches
    start = rchar()
    frame = lazy[321]
    read = rchar() - start
    np.testing.assert_array_equal(frame, movie[321])
    assert read < 10 * movie[0].nbytes, f"{read} bytes read for one {movie[0].nbytes}-byte frame"
    assert movie.nbytes > 300 * movie[0].nbytes


def test_bad_nwb_inputs_say_what_the_file_has(batch, raw_dir, nwb_inputs):
    with pytest.raises(MovieReadError, match=r"no imaging series 'Nope'.*acquisition/TwoPhotonSeries"):
        batch.caiman.add_item("mcorr", "x", "in.nwb", {"main": {"var_name_hdf5": "Nope"}})
    nwb = pynwb.NWBFile(session_description="s", identifier="x", session_start_time=SESSION["session_start_time"])
    with pynwb.NWBHDF5IO(str(raw_dir / "empty.nwb"), "w") as io:
        io.write(nwb)
    with pytest.raises(MovieReadError, match="holds no imaging series"):
        batch.caiman.add_item("mcorr", "x", "empty.nwb", {"main": {}})
    assert len(batch) == 0
    os.remove(raw_dir / "part1.tif")
    with pytest.raises(MovieReadError, match="part1.tif, which does not exist"):
        open_movie(raw_dir / "ext.nwb")


def test_export_nwb_from_the_batch_table(done, tmp_path):
    from mesmerize_widgets.widgets import BatchTable

    df, _ = done
    table = BatchTable(df)
    assert table.nwb_folder.value == str(Path(df.attrs["batch_path"]) / "nwb")
    table.nwb_folder.value = str(tmp_path / "out")
    table.select([0])
    table.nwb_button.click()  # an mcorr item: refused, said, nothing written
    assert "'mcorr' item" in table.last_message and not (tmp_path / "out").exists()
    table.select([1])
    table.nwb_button.click()  # a new file needs the session's metadata
    assert "session_start_time" in table.last_message and not list((tmp_path / "out").glob("*"))
    table.nwb_options = {"session": SESSION, "imaging_plane": PLANE}
    table.nwb_button.click()
    path = tmp_path / "out" / f"{df.iloc[1]['uuid']}.nwb"
    assert "exported 1 item(s)" in table.last_message and path.exists()
    check_file(path)
    table.close()
