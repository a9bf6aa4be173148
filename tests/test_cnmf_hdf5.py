"""CaImAn's CNMF HDF5 layout, written and read without CaImAn."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse

from mesmerize_widgets.formats.cnmf_hdf5 import (
    CAIMAN_PARAM_GROUPS,
    CNMFFormatError,
    Estimates,
    ParamsView,
    load_cnmf,
    save_cnmf,
)

DIMS = (12, 10)
K, T = 5, 30

# what CaImAn 1.12's Estimates.__init__ defines, less the keys its save skips
CAIMAN_ESTIMATES_KEYS = {
    "A", "C", "f", "b", "R", "W", "b0", "YrA", "S", "sn", "g", "bl", "c1", "neurons_sn", "lam",
    "center", "F_dff", "idx_components", "idx_components_bad", "SNR_comp", "r_values",
    "cnn_preds", "ecc", "noisyC", "C_on", "Ab", "Cf", "OASISinstances", "CY", "CC", "Ab_dense",
    "Yr_buf", "mn", "vr", "ind_new", "rho_buf", "AtA", "AtY_buf", "sv", "dims", "A_thr",
    "discarded_components",
}  # fmt: skip


def make_estimates(seed: int = 0) -> Estimates:
    rng = np.random.default_rng(seed)
    P = DIMS[0] * DIMS[1]
    A = scipy.sparse.random(P, K, density=0.1, format="csc", random_state=seed)
    return Estimates(
        A=A,
        C=rng.random((K, T)),
        S=rng.random((K, T)),
        YrA=rng.standard_normal((K, T)),
        b=rng.random((P, 1)),
        f=rng.random((1, T)),
        g=rng.random((K, 2)),
        sn=rng.random(P).astype(np.float32),
        bl=rng.random(K),
        c1=rng.random(K),
        neurons_sn=rng.random(K),
        lam=rng.random(K),
        idx_components=np.array([0, 2, 3]),
        idx_components_bad=np.array([1, 4]),
        SNR_comp=rng.random(K) * 5,
        r_values=rng.random(K),
        cnn_preds=np.array([]),
        dims=DIMS,
    )


PARAMS = {
    "data": {"fnames": ["movie.tif"], "fr": 15.0, "decay_time": 0.5, "dxy": (1.0, 1.0),
             "caiman_version": "1.12.1"},
    "init": {"K": 5, "gSig": (3, 3), "method_init": "greedy_roi", "nb": 1},
    "quality": {"min_SNR": 2.0, "rval_thr": 0.7, "use_cnn": False},
    "motion": {"max_shifts": (4, 4)},
}  # fmt: skip


def assert_same(a, b, key=""):
    if scipy.sparse.issparse(a):
        assert scipy.sparse.issparse(b), key
        a, b = a.tocsc(), b.tocsc()
        a.sort_indices()
        b.sort_indices()
        for x, y in ((a.data, b.data), (a.indices, b.indices), (a.indptr, b.indptr)):
            assert x.dtype == y.dtype and np.array_equal(x, y), key
        assert a.shape == b.shape, key
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, key
        assert a.shape == b.shape and np.array_equal(a, b), key
    else:
        assert a == b, key


def test_round_trip_bit_exact(tmp_path: Path):
    est = make_estimates()
    path = save_cnmf(tmp_path / "x.hdf5", est, PARAMS, dims=DIMS, mmap_file="/data/m_order_C.mmap")
    assert path == tmp_path / "x.hdf5"
    res = load_cnmf(path)
    for fld in dataclasses.fields(Estimates):
        name = fld.name
        if name in ("merged_ROIs", "coordinates", "groups"):  # CaImAn never saves these
            continue
        assert_same(getattr(est, name), getattr(res.estimates, name), name)
    assert isinstance(res.estimates.A, scipy.sparse.csc_matrix)
    assert res.estimates.R is None and res.estimates.W is None
    assert res.dims == DIMS and res.estimates.dims == DIMS
    assert res.mmap_file == "/data/m_order_C.mmap"
    assert res.remove_very_bad_comps is False and res.skip_refinement is False
    assert res.estimates.n_components == K
    # params: strings, tuples, lists of strings, defaults filled
    p = res.params
    assert isinstance(p, ParamsView)
    assert p.data["caiman_version"] == "1.12.1"
    assert p.get("init", "method_init") == "greedy_roi"
    assert p.init["gSig"].tolist() == [3, 3]  # CaImAn reads non-tuple-key tuples as arrays
    assert p.data["dxy"] == (1.0, 1.0) and p.motion["max_shifts"] == (4, 4)
    assert p.data["fnames"].tolist() == [b"movie.tif"]
    assert p.quality["min_SNR"] == 2.0 and p.quality["SNR_lowest"] == 0.5  # given + default
    assert p.quality["use_cnn"] is False and p.get("quality", "gSig_range") is None
    assert set(p.groups) == set(CAIMAN_PARAM_GROUPS)
    with pytest.raises(KeyError, match="min_snr"):
        p.get("quality", "min_snr")
    with pytest.raises(AttributeError):
        _ = p.nonexistent
    # footprints
    fp = res.estimates.footprints()
    assert fp.shape == (K, *DIMS)
    for k in range(K):
        np.testing.assert_array_equal(fp[k], est.A[:, k].toarray().reshape(DIMS, order="F"))


def test_none_and_g_none(tmp_path: Path):
    est = dataclasses.replace(make_estimates(), g=None, idx_components=None, cnn_preds=None, lam=None)
    res = load_cnmf(save_cnmf(tmp_path / "x.hdf5", est, {}, dims=DIMS, mmap_file="m.mmap"))
    assert res.estimates.g is None and res.estimates.idx_components is None
    assert res.estimates.cnn_preds is None and res.estimates.lam is None
    with h5py.File(tmp_path / "x.hdf5") as f:
        assert f["estimates/g"][()] == 0.0  # CaImAn writes g=None as 0.0
        assert f["estimates/idx_components"][()] == b"NoneType"


def test_layout_matches_caiman(tmp_path: Path):
    est = make_estimates()
    est.Cn = np.ones(DIMS, dtype=np.float32)
    path = save_cnmf(tmp_path / "x.hdf5", est, PARAMS, dims=DIMS, mmap_file="/abs/m.mmap")
    with h5py.File(path, "r") as f:
        # root
        assert dict(f.attrs) == {"mmap_file": "/abs/m.mmap"}
        assert set(f.keys()) == {"dims", "dview", "estimates", "params", "remove_very_bad_comps",
                                 "skip_refinement"}
        assert f["dview"][()] == b"NoneType"
        assert f["dims"][()].tolist() == list(DIMS) and f["dims"].dtype.kind == "i"
        assert f["remove_very_bad_comps"][()] == np.False_ and f["skip_refinement"].dtype == bool
        # estimates
        e = f["estimates"]
        assert set(e.keys()) == CAIMAN_ESTIMATES_KEYS | {"Cn"}
        assert isinstance(e["A"], h5py.Group)
        assert set(e["A"].keys()) == {"data", "indices", "indptr", "shape"}
        assert e["A/shape"][()].tolist() == [DIMS[0] * DIMS[1], K]
        np.testing.assert_array_equal(e["A/data"][()], est.A.data)
        np.testing.assert_array_equal(e["A/indptr"][()], est.A.indptr)
        np.testing.assert_array_equal(e["A/indices"][()], est.A.indices)
        for key in ("C", "S", "YrA", "b", "f", "g", "sn", "SNR_comp", "r_values"):
            assert isinstance(e[key], h5py.Dataset)
            np.testing.assert_array_equal(e[key][()], getattr(est, key))
        assert e["cnn_preds"].shape == (0,)
        assert e["idx_components"].dtype.kind == "i"
        for key in ("R", "W", "b0", "center", "F_dff", "ecc", "noisyC", "Ab", "A_thr",
                    "discarded_components"):
            assert e[key][()] == b"NoneType", key
        assert e["dims"][()].tolist() == list(DIMS)
        assert len(e.attrs) == 0
        # params
        p = f["params"]
        assert set(p.keys()) == set(CAIMAN_PARAM_GROUPS)
        assert p["data"].attrs["caiman_version"] == "1.12.1"
        assert p["data"].attrs["var_name_hdf5"] == "mov"
        assert "caiman_version" not in p["data"]  # strings are attributes, not datasets
        assert p["data/fnames"][()].tolist() == [b"movie.tif"]
        assert p["data/fr"][()] == 15.0 and p["data/dxy"][()].tolist() == [1.0, 1.0]
        assert p["data/last_commit"][()] == b"NoneType"
        assert p["quality/min_SNR"][()] == 2.0 and p["quality/use_cnn"][()] == np.False_
        assert p["quality/gSig_range"][()] == b"NoneType"
        assert p["init/gSig"][()].tolist() == [3, 3]
        assert p["init"].attrs["method_init"] == "greedy_roi"
        assert p["temporal/solvers"][()].tolist() == [b"ECOS", b"SCS"]
        assert p["online"].attrs["movie_name_online"] == "online_movie.mp4"


def write_other_version(path: Path, est: Estimates, *, with_A: bool = True) -> None:
    """A file shaped like an older/other CaImAn's: few keys, byte-string numbers, W sparse."""
    with h5py.File(path, "w") as f:
        f.attrs["mmap_file"] = "/old/place/Yr_d1_12_d2_10_d3_1_order_C_frames_30.mmap"
        f["dims"] = np.array(DIMS)
        f["dview"] = "NoneType"
        e = f.create_group("estimates")
        if with_A:
            for k, v in (("data", est.A.data), ("indices", est.A.indices),
                         ("indptr", est.A.indptr), ("shape", np.array(est.A.shape))):
                e[f"A/{k}"] = v
        e["C"] = est.C
        e["b"] = est.b
        e["f"] = est.f
        e["YrA"] = est.YrA
        e["bl"] = np.array([str(x) for x in est.bl]).astype("|S32")
        e["c1"] = np.array([str(x) for x in est.c1]).astype("|S32")
        e["lam"] = np.array([str(x) for x in est.lam]).astype("|S32")
        e["neurons_sn"] = np.array([str(x) for x in est.neurons_sn]).astype("|S32")
        e["idx_components"] = np.array([0, 2, 3], dtype=np.int32)
        e["idx_components_bad"] = "NoneType"
        W = scipy.sparse.random(DIMS[0] * DIMS[1], DIMS[0] * DIMS[1], density=0.01,
                                format="csc", random_state=3)
        for k, v in (("data", W.data), ("indices", W.indices), ("indptr", W.indptr),
                     ("shape", np.array(W.shape))):
            e[f"W/{k}"] = v
        e["b0"] = np.ones(DIMS[0] * DIMS[1])
        e["a_key_from_the_future"] = np.arange(3)
        q = f.create_group("params/quality")
        q["min_SNR"] = 2.5
        q["rval_thr"] = 0.85
        f.create_group("params/data").attrs["caiman_version"] = "1.9.13"


def test_other_caiman_version_loads(tmp_path: Path):
    est = make_estimates()
    path = tmp_path / "old.hdf5"
    write_other_version(path, est)
    res = load_cnmf(path)
    e = res.estimates
    assert res.dims == DIMS and e.dims == DIMS
    np.testing.assert_allclose(e.bl, est.bl, rtol=1e-12)
    assert e.bl.dtype == np.float64 and e.lam.dtype == np.float64
    np.testing.assert_allclose(e.neurons_sn, est.neurons_sn, rtol=1e-12)
    np.testing.assert_allclose(e.c1, est.c1, rtol=1e-12)
    assert e.idx_components.dtype == np.int64 and e.idx_components.tolist() == [0, 2, 3]
    assert e.idx_components_bad is None and e.S is None and e.SNR_comp is None
    assert scipy.sparse.issparse(e.W) and e.W.shape == (DIMS[0] * DIMS[1],) * 2
    assert e.extra["a_key_from_the_future"].tolist() == [0, 1, 2]
    assert res.params.quality["min_SNR"] == 2.5 and res.params.data["caiman_version"] == "1.9.13"
    assert res.skip_refinement is False
    # a rewrite keeps the unknown key and encodes the converted values
    out = save_cnmf(tmp_path / "new.hdf5", e, res.params, dims=res.dims, mmap_file=res.mmap_file)
    again = load_cnmf(out)
    assert again.estimates.extra["a_key_from_the_future"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(again.estimates.bl, e.bl)


def test_missing_required_key_and_not_cnmf(tmp_path: Path):
    path = tmp_path / "noA.hdf5"
    write_other_version(path, make_estimates(), with_A=False)
    with pytest.raises(CNMFFormatError, match=r"noA\.hdf5.*estimates/A"):
        load_cnmf(path)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f["mov"] = np.zeros((2, 3, 3))
    with pytest.raises(CNMFFormatError, match=r"other\.hdf5: not a CNMF HDF5"):
        load_cnmf(other)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(CNMFFormatError, match="junk.hdf5"):
        load_cnmf(junk)
    with pytest.raises(FileNotFoundError):
        load_cnmf(tmp_path / "absent.hdf5")
    with pytest.raises(KeyError, match="unknown CNMF params groups"):
        save_cnmf(tmp_path / "y.hdf5", make_estimates(), {"main": {}}, dims=DIMS, mmap_file="m")


def test_atomic_write_keeps_old_file(tmp_path: Path):
    path = save_cnmf(tmp_path / "x.hdf5", make_estimates(0), PARAMS, dims=DIMS, mmap_file="m.mmap")
    before = path.read_bytes()
    inode = path.stat().st_ino
    bad = make_estimates(1)
    bad.extra["unencodable"] = object()
    with pytest.raises(TypeError, match="unencodable"):
        save_cnmf(path, bad, PARAMS, dims=DIMS, mmap_file="m.mmap")
    assert path.read_bytes() == before and path.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.hdf5"]  # no temp file left
    # an open reader keeps its snapshot while a new version is moved into place
    with h5py.File(path, "r") as reader:
        save_cnmf(path, make_estimates(2), PARAMS, dims=DIMS, mmap_file="m.mmap")
        np.testing.assert_array_equal(reader["estimates/C"][()], make_estimates(0).C)
    assert path.stat().st_ino != inode
    np.testing.assert_array_equal(load_cnmf(path).estimates.C, make_estimates(2).C)


@pytest.mark.caiman
def test_caiman_load_cnmf_reads_our_file(tmp_path: Path):
    pytest.importorskip("caiman.source_extraction")
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    est = make_estimates()
    path = save_cnmf(tmp_path / "x.hdf5", est, PARAMS, dims=DIMS, mmap_file="/abs/m.mmap")
    cnm = load_CNMF(str(path))
    assert cnm.dims == DIMS and cnm.mmap_file == "/abs/m.mmap"
    assert_same(est.A, cnm.estimates.A.tocsc())
    np.testing.assert_array_equal(cnm.estimates.C, est.C)
    np.testing.assert_array_equal(cnm.estimates.idx_components, est.idx_components)
    assert cnm.params.quality["min_SNR"] == 2.0 and cnm.params.get("init", "K") == 5
    assert cnm.estimates.dims == DIMS
    # and we read what CaImAn writes back
    cnm.save(str(tmp_path / "back.hdf5"))
    res = load_cnmf(tmp_path / "back.hdf5")
    assert_same(est.A, res.estimates.A)
    np.testing.assert_array_equal(res.estimates.YrA, est.YrA)
