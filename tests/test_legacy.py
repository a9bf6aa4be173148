"""Importing a mesmerize-core ``batch.pickle``: every row kept, nothing unsafe ever run."""

from __future__ import annotations

import os
import pickle
import shutil
import uuid as uuid_mod
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

import mesmerize_widgets as mw
from mesmerize_widgets.errors import NotABatchError, UnsafePickleError
from mesmerize_widgets.store import BatchStore
from mesmerize_widgets.store.batch_store import DB_NAME
from mesmerize_widgets.store.legacy import import_legacy_batch

DATA = Path(__file__).parent / "data"
COLUMNS = ["algo", "item_name", "input_movie_path", "params", "outputs", "added_time",
           "ran_time", "algo_duration", "comments", "uuid"]

MCORR, CNMF_OK, CNMF_FAILED, CNMFE_PENDING, ABS_PENDING, OTHER = (str(uuid_mod.uuid4()) for _ in range(6))
MMAP = f"{MCORR}/{MCORR}-a_els__d1_60_d2_80_d3_1_order_F_frames_100.mmap"


def _mcorr_outputs(u: str) -> dict:
    return {
        "mcorr-output-path": MMAP,
        "corr-img-path": f"{u}/{u}_cn.npy",
        "shifts": f"{u}/{u}_shifts.npy",
        "mean-projection-path": f"{u}/{u}_mean_projection.npy",
        "std-projection-path": f"{u}/{u}_std_projection.npy",
        "max-projection-path": f"{u}/{u}_max_projection.npy",
        "success": True,
        "traceback": None,
    }


def _cnmf_outputs(u: str) -> dict:
    return {
        "cnmf-hdf5-path": f"{u}/{u}.hdf5",
        "cnmf-memmap-path": f"{u}/{u}_cnmf-memmap__d1_60_d2_80_d3_1_order_C_frames_100.mmap",
        "corr-img-path": f"{u}/{u}_cn.npy",
        "mean-projection-path": f"{u}/{u}_mean_projection.npy",
        "std-projection-path": f"{u}/{u}_std_projection.npy",
        "max-projection-path": f"{u}/{u}_max_projection.npy",
        "success": True,
        "traceback": None,
    }


MCORR_PARAMS = {"main": {"max_shifts": (24, 24), "strides": (48, 48), "overlaps": (24, 24), "pw_rigid": True}}
CNMF_PARAMS = {"main": {"p": 1, "gSig": (4, 4), "rf": 15, "K": 4, "merge_thr": 0.85}, "refit": True}
TRACEBACK = "Traceback (most recent call last):\n  File ...\nValueError: CNMF exploded"


def _mesmerize_core_frame(abs_movie: Path) -> pd.DataFrame:
    """A batch DataFrame built the way mesmerize-core builds and updates one."""
    df = pd.DataFrame(columns=COLUMNS)

    def add(algo, name, movie, params, u):
        df.loc[df.index.size] = pd.Series({
            "algo": algo, "item_name": name, "input_movie_path": str(movie), "params": params,
            "outputs": None, "added_time": datetime(2023, 5, 1, 12, 0).isoformat(timespec="seconds"),
            "ran_time": None, "algo_duration": None, "comments": None, "uuid": u,
        })

    def update(u, updates):
        i = df.index[df["uuid"] == u][0]
        row = df.iloc[i]
        row.update(pd.Series(updates))
        df.iloc[i] = row

    add("mcorr", "movie a", "movies/a.tif", MCORR_PARAMS, MCORR)
    update(MCORR, {"outputs": _mcorr_outputs(MCORR), "ran_time": "2023-05-01T12:05:00", "algo_duration": "12.3 sec"})
    add("cnmf", "movie a", MMAP, CNMF_PARAMS, CNMF_OK)
    update(CNMF_OK, {"outputs": _cnmf_outputs(CNMF_OK), "ran_time": "2023-05-01T12:09:00",
                     "algo_duration": "31.0 sec", "comments": "looks good"})
    add("cnmf", "movie a", MMAP, {"main": {**CNMF_PARAMS["main"], "K": 400}}, CNMF_FAILED)
    update(CNMF_FAILED, {"outputs": {"success": False, "traceback": TRACEBACK},
                         "ran_time": "2023-05-01T12:10:00", "algo_duration": "2.0 sec"})
    add("cnmfe", "movie b", "movies/b.tif", {"main": {"gSig": (10, 10), "gSiz": (41, 41)}}, CNMFE_PENDING)
    add("mcorr", "elsewhere", abs_movie, MCORR_PARAMS, ABS_PENDING)
    add("my_own_algo", "unknown algo", "movies/b.tif", {"main": {"anything": [1, (2, 3)]}}, OTHER)
    return df


@pytest.fixture
def legacy_batch(tmp_path, raw_dir):
    """A raw data dir (set), and a batch dir holding batch.pickle and mesmerize-core output dirs."""
    raw = raw_dir
    (raw / "movies").mkdir()
    for name in ("a.tif", "b.tif"):
        (raw / "movies" / name).write_bytes(b"II*\x00not really a tiff")
    abs_movie = tmp_path / "elsewhere" / "c.tif"
    abs_movie.parent.mkdir()
    abs_movie.write_bytes(b"c")
    batch = tmp_path / "batch"
    batch.mkdir()
    for outs in (_mcorr_outputs(MCORR), _cnmf_outputs(CNMF_OK)):
        for value in outs.values():
            if isinstance(value, str):
                (batch / value).parent.mkdir(exist_ok=True)
                (batch / value).write_bytes(f"data of {value}".encode())
    (batch / CNMF_FAILED).mkdir()
    (batch / CNMF_FAILED / f"{CNMF_FAILED}.log").write_text("it failed")
    df = _mesmerize_core_frame(abs_movie)
    df.to_pickle(batch / "batch.pickle")
    return batch / "batch.pickle", df, raw, abs_movie


def _snapshot(batch: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(batch).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in batch.rglob("*")
        if p.is_file() and not p.name.startswith(DB_NAME)
    }


def test_import_keeps_every_row(legacy_batch):
    pickle_path, original, raw, abs_movie = legacy_batch
    batch = pickle_path.parent
    before = _snapshot(batch)

    df = mw.load_batch(pickle_path)

    assert (batch / DB_NAME).is_file()
    assert _snapshot(batch) == before  # output dirs and the pickle itself untouched
    assert not [p for p in batch.iterdir() if p.name.startswith(".import-")]
    assert list(df["uuid"]) == list(original["uuid"])
    assert list(df.columns[:10]) == COLUMNS
    for (_, new), (_, old) in zip(df.iterrows(), original.iterrows(), strict=True):
        for col in ("algo", "item_name", "params", "outputs", "added_time", "ran_time", "algo_duration", "comments"):
            assert new[col] == old[col], col
    by_uuid = df.set_index("uuid")
    assert list(by_uuid["status"]) == ["done", "done", "failed", "pending", "pending", "pending"]
    assert by_uuid.loc[CNMF_FAILED, "error"] == TRACEBACK
    assert by_uuid.loc[MCORR, "error"] is None
    # tuples come back as tuples, nested ones too
    assert isinstance(by_uuid.loc[MCORR, "params"]["main"]["max_shifts"], tuple)
    assert by_uuid.loc[OTHER, "params"] == {"main": {"anything": [1, (2, 3)]}}
    assert isinstance(by_uuid.loc[OTHER, "params"]["main"]["anything"][1], tuple)
    # input paths: relative to the raw data path, the batch dir for an mcorr output, or absolute
    assert by_uuid.loc[MCORR, "input_movie_path"] == "movies/a.tif"
    assert by_uuid.loc[CNMF_OK, "input_movie_path"] == MMAP
    store = BatchStore(batch)
    recs = {r["uuid"]: r for r in store.items()}
    assert recs[MCORR]["input_root"] == "raw"
    assert recs[CNMF_OK]["input_root"] == recs[CNMF_FAILED]["input_root"] == "batch"
    assert recs[ABS_PENDING]["input_root"] == "abs"
    assert recs[ABS_PENDING]["input_movie_path"] == abs_movie.as_posix()
    assert df.iloc[3].caiman.get_input_movie_path() == raw / "movies" / "b.tif"
    # the mcorr -> cnmf chain
    assert df.caiman.get_parent(1) == MCORR
    assert df.caiman.get_parent(CNMF_FAILED) == MCORR
    assert df.caiman.get_parent(0) is None
    assert df.caiman.get_children(0) == [CNMF_OK, CNMF_FAILED]
    assert df.caiman.get_children(3) == []
    # where it came from
    assert store.get_meta("legacy_source") == "batch.pickle"
    assert datetime.fromisoformat(store.get_meta("imported"))


def test_second_import_is_a_no_op(legacy_batch):
    pickle_path, original, _, _ = legacy_batch
    mw.load_batch(pickle_path)
    store = BatchStore(pickle_path.parent)
    store.update(MCORR, comments="edited after the import")
    again = import_legacy_batch(pickle_path)
    assert again.get(MCORR)["comments"] == "edited after the import"
    assert len(again.items()) == len(original)
    assert mw.load_batch(pickle_path).set_index("uuid").loc[MCORR, "comments"] == "edited after the import"


def test_import_beside_another_batch_is_refused(legacy_batch, tmp_path):
    pickle_path, _, _, _ = legacy_batch
    other = pickle_path.with_name("other.pickle")
    shutil.copy(pickle_path, other)
    import_legacy_batch(pickle_path)
    with pytest.raises(FileExistsError, match="not imported from other.pickle"):
        import_legacy_batch(other)


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _pwned() -> Path:
    return Path("/tmp") / f"pwned-{uuid_mod.uuid4().hex}"


def test_reduce_to_os_system_is_refused(legacy_batch):
    pickle_path, original, _, _ = legacy_batch
    target = _pwned()
    df = original.copy()
    df.at[2, "params"] = {"main": {"K": _Evil(target)}}  # deep inside a cell, after good rows
    df.to_pickle(pickle_path)
    with pytest.raises(UnsafePickleError, match="system"):
        mw.load_batch(pickle_path)
    assert not target.exists()
    assert not (pickle_path.parent / DB_NAME).exists()
    assert not [p for p in pickle_path.parent.iterdir() if p.name.startswith(".import-")]


def test_eval_is_refused(tmp_path):
    target = _pwned()
    code = f"__import__('os').system('touch {target}')"
    path = tmp_path / "batch.pickle"
    path.write_bytes(pickle.dumps(_Reduce(eval, (code,))))
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        mw.load_batch(path)
    assert not target.exists()
    assert not (tmp_path / DB_NAME).exists()


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize(
    "raw, name",
    [
        (b"cbuiltins\ngetattr\n(cos\nenviron\nS'get'\ntR.", "builtins.getattr"),
        (b"csubprocess\nPopen\n((S'touch'\nS'/tmp/x'\nltR.", "subprocess.Popen"),
        (b"cbuiltins\nexec\n(S'print(1)'\ntR.", "builtins.exec"),
        (b"cpandas.io.pickle\nread_pickle\n(S'/tmp/x'\ntR.", "pandas.io.pickle.read_pickle"),
        (b"cnumpy\nload\n(S'/tmp/x'\ntR.", "numpy.load"),
    ],
)
def test_other_globals_are_refused(tmp_path, raw, name):
    path = tmp_path / "batch.pickle"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
        import_legacy_batch(path)
    assert not (tmp_path / DB_NAME).exists()


def test_not_a_batch_pickle(tmp_path):
    path = tmp_path / "batch.pickle"
    path.write_bytes(pickle.dumps({"algo": ["mcorr"]}))
    with pytest.raises(NotABatchError):
        import_legacy_batch(path)
    path.write_bytes(b"\x80\x05garbage")
    with pytest.raises(NotABatchError):
        import_legacy_batch(path)
    assert not (tmp_path / DB_NAME).exists()


def test_failed_import_leaves_nothing(legacy_batch):
    pickle_path, original, _, _ = legacy_batch
    df = original.copy()
    df.at[4, "params"] = {"main": {1: "an int key JSON cannot keep"}}
    df.to_pickle(pickle_path)
    with pytest.raises(NotABatchError, match=ABS_PENDING):
        import_legacy_batch(pickle_path)
    assert not (pickle_path.parent / DB_NAME).exists()
    assert not [p for p in pickle_path.parent.iterdir() if p.name.startswith(".import-")]


def _check_fixture_batch(df: pd.DataFrame) -> None:
    """The rows tests/data/make_legacy_pickle.py wrote."""
    mcorr, cnmf, cnmfe = (
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    )
    assert list(df["uuid"]) == [mcorr, cnmf, cnmfe]
    assert list(df["status"]) == ["done", "failed", "pending"]
    assert df.iloc[0]["params"]["main"]["max_shifts"] == (24, 24)
    assert df.iloc[1]["params"] == {"main": {"p": 1, "gSig": (4, 4), "K": 4, "min_SNR": 2.5}, "refit": True}
    # Path objects in old outputs become the same forward-slash strings newer versions wrote
    assert df.iloc[0]["outputs"]["corr-img-path"] == f"{mcorr}/{mcorr}_cn.npy"
    assert df.iloc[1]["error"].endswith("ValueError: boom")
    assert df.caiman.get_parent(1) == mcorr
    assert df.caiman.get_children(0) == [cnmf]


@pytest.mark.parametrize("version", ["1.5.3", "2.2.3"])
def test_pickle_from_older_pandas(tmp_path, raw_dir, version):
    pickle_path = tmp_path / "batch.pickle"
    shutil.copy(DATA / f"legacy-batch-pandas-{version}.pickle", pickle_path)
    _check_fixture_batch(mw.load_batch(pickle_path))


def test_pickle_from_pandas_3_with_pyarrow(tmp_path, raw_dir):
    """pandas 3 with pyarrow keeps the column labels in Arrow; that needs pyarrow to read."""
    pickle_path = tmp_path / "batch.pickle"
    shutil.copy(DATA / "legacy-batch-pandas-3.1.1-pyarrow.pickle", pickle_path)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyarrow"):
            mw.load_batch(pickle_path)
        assert not (tmp_path / DB_NAME).exists()
    else:
        _check_fixture_batch(mw.load_batch(pickle_path))
