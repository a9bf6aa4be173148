"""SQLite batch vs mesmerize-core's pickle batch: open, add items, update one item's outputs.

mesmerize-core keeps a batch as one pickled DataFrame and rewrites the whole file on every
change, so each change costs more as the batch grows. This benchmark rebuilds that approach
here (``df.loc[len] = row`` or ``df.at[...] = ...``, then ``df.to_pickle``) next to the same
items in a ``batch.sqlite`` and prints, for each operation, both timings and their ratio, all
measured in this one run. Run it by hand::

    .venv/bin/python benchmarks/bench_batch.py            # 10,000 items
    .venv/bin/python benchmarks/bench_batch.py --n-items 2000 --n-add 200

The pickle baseline is a lower bound of mesmerize-core's cost: its ``add_item`` and
``update_item`` also re-read the pickle and copy it to a backup before each rewrite.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid as uuid_mod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.store import BatchStore
from mesmerize_widgets.store.paths import set_parent_raw_data_path

LEGACY_COLUMNS = ["algo", "item_name", "input_movie_path", "params", "outputs", "added_time",
                  "ran_time", "algo_duration", "comments", "uuid"]

MCORR_PARAMS = {"main": {"max_shifts": (24, 24), "strides": (48, 48), "overlaps": (24, 24),
                         "max_deviation_rigid": 3, "border_nan": "copy", "pw_rigid": True,
                         "gSig_filt": None}}
CNMF_PARAMS = {"main": {"fr": 30, "p": 1, "nb": 2, "merge_thr": 0.85, "rf": 15, "stride": 6,
                        "K": 4, "gSig": (4, 4), "ssub": 1, "tsub": 1, "method_init": "greedy_roi",
                        "min_SNR": 2.0, "rval_thr": 0.7, "use_cnn": True, "min_cnn_thr": 0.8,
                        "cnn_lowest": 0.1, "decay_time": 0.4},
               "refit": True}


def mcorr_outputs(u: str) -> dict:
    """What mesmerize-core's mcorr writes: relative paths, success, traceback."""
    return {
        "mcorr-output-path": f"{u}/{u}-movie_{len(u)}_els__d1_512_d2_512_d3_1_order_F_frames_3000.mmap",
        "corr-img-path": f"{u}/{u}_cn.npy",
        "shifts": f"{u}/{u}_shifts.npy",
        "mean-projection-path": f"{u}/{u}_mean_projection.npy",
        "std-projection-path": f"{u}/{u}_std_projection.npy",
        "max-projection-path": f"{u}/{u}_max_projection.npy",
        "success": True,
        "traceback": None,
    }


def cnmf_outputs(u: str) -> dict:
    return {
        "cnmf-hdf5-path": f"{u}/{u}.hdf5",
        "cnmf-memmap-path": f"{u}/{u}_cnmf-memmap__d1_512_d2_512_d3_1_order_C_frames_3000.mmap",
        "corr-img-path": f"{u}/{u}_cn.npy",
        "mean-projection-path": f"{u}/{u}_mean_projection.npy",
        "std-projection-path": f"{u}/{u}_std_projection.npy",
        "max-projection-path": f"{u}/{u}_max_projection.npy",
        "pnr-image-path": f"{u}/{u}_pn.npy",
        "cnmf-extra-path": f"{u}/{u}_extra.npy",
        "success": True,
        "traceback": None,
    }


def _params(template: dict, i: int) -> dict:
    """A fresh params dict per item (as a real batch has; shared ones would pickle only once)."""
    main = dict(template["main"])
    if "K" in main:
        main["K"] = 4 + i % 5
    else:
        main["max_deviation_rigid"] = 3 + i % 3
    return {**template, "main": main}


def make_records(n: int) -> list[dict]:
    """n finished items: mcorr ones, each followed by a cnmf item fed by its output movie."""
    recs = []
    parent = None
    for i in range(n):
        u = str(uuid_mod.uuid4())
        minute, second = divmod(i, 60)
        common = {"uuid": u, "added_time": f"2023-05-01T{minute // 60 % 24:02d}:{minute % 60:02d}:{second:02d}",
                  "ran_time": f"2023-05-02T{minute // 60 % 24:02d}:{minute % 60:02d}:{second:02d}",
                  "algo_duration": f"{100 + i % 97}.{i % 10} sec", "comments": None, "status": "done",
                  "progress": 1.0}
        if i % 2 == 0:
            parent = u
            recs.append({**common, "algo": "mcorr", "item_name": f"session {i // 2}", "input_root": "raw",
                         "input_movie_path": f"animal_{i % 7}/session_{i // 2}/movie.tif",
                         "params": _params(MCORR_PARAMS, i), "outputs": mcorr_outputs(u)})
        else:
            out = recs[-1]["outputs"]["mcorr-output-path"]
            recs.append({**common, "algo": "cnmf", "item_name": f"session {i // 2}", "input_root": "batch",
                         "input_movie_path": out, "parent_uuid": parent, "params": _params(CNMF_PARAMS, i),
                         "outputs": cnmf_outputs(u)})
    return recs


def legacy_frame(records: list[dict]) -> pd.DataFrame:
    """The same items as mesmerize-core's DataFrame (object columns, as its appends make them).

    Round-tripped through pickle so every cell is its own object, as in a batch read from disk.
    """
    df = pd.DataFrame({c: [r.get(c) for r in records] for c in LEGACY_COLUMNS}, columns=LEGACY_COLUMNS,
                      dtype=object)
    return pickle.loads(pickle.dumps(df))


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_call_times(fn: Callable[[int], object], n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return times


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-items", type=int, default=10_000, help="items in the batch (default 10000)")
    ap.add_argument("--n-add", type=int, default=1_000, help="items added one by one (default 1000)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of each open (median)")
    ap.add_argument("--pickle-writes", type=int, default=25,
                    help="pickle rewrites timed per operation; each costs a full rewrite, so the "
                         "per-item median comes from this many instead of --n-add (default 25)")
    args = ap.parse_args(argv)
    n, n_add = args.n_items, args.n_add
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw"
        raw.mkdir()
        set_parent_raw_data_path(raw)
        movie = raw / "movie.tif"
        tifffile.imwrite(movie, np.zeros((10, 16, 16), dtype=np.uint16))

        records = make_records(n)
        batch_dir = tmp / "batch"
        store = BatchStore.create(batch_dir)
        store.add_many(records)
        pickle_path = tmp / "legacy" / "batch.pickle"
        pickle_path.parent.mkdir()
        legacy = legacy_frame(records)
        legacy.to_pickle(pickle_path)
        size_sqlite = (batch_dir / "batch.sqlite").stat().st_size
        print(f"mesmerize_widgets bench_batch: {n:,} items; Python {platform.python_version()}, "
              f"pandas {pd.__version__}, {platform.machine()}")
        print(f"  batch.sqlite {size_sqlite / 1e6:.1f} MB, batch.pickle {pickle_path.stat().st_size / 1e6:.1f} MB\n")

        rows: list[tuple[str, float, float, str]] = []  # name, ours, pickle, note

        # (a) open the batch -----------------------------------------------------------------
        gc.collect()
        t_ours = median_time(lambda: mw.load_batch(batch_dir), args.repeats)
        t_pkl = median_time(lambda: pd.read_pickle(pickle_path), args.repeats)
        rows.append(("open: load_batch(dir) vs pd.read_pickle", t_ours, t_pkl, f"median of {args.repeats}"))
        # load_batch = look up queued/running items for dead runners (status index) + this read
        t_one = median_time(lambda: BatchStore(batch_dir).dataframe(), args.repeats)
        rows.append(("  (info) one read: BatchStore(dir).dataframe()", t_one, t_pkl, "load_batch minus reap_stale"))

        # (b) add items one by one -----------------------------------------------------------
        df = mw.load_batch(batch_dir)
        summary_params = {"main": {"chunk_frames": 200, "eight_neighbours": True}}
        ours = per_call_times(
            lambda i: df.caiman.add_item(algo="summary", item_name=f"new {i}", input_movie_path=movie,
                                         params=summary_params),
            n_add,
        )
        assert len(df) == n + n_add and len(store.uuids()) == n + n_add

        def store_add(i: int) -> None:
            store.add(algo="cnmf", item_name=f"direct {i}", params=CNMF_PARAMS, input_root="raw",
                      input_movie_path=f"animal_{i % 7}/session_{i}/movie.tif")

        direct = per_call_times(store_add, n_add)

        def pickle_add(i: int) -> None:
            u = str(uuid_mod.uuid4())
            legacy.loc[legacy.index.size] = pd.Series({
                "algo": "cnmf", "item_name": f"new {i}", "input_movie_path": f"animal_{i % 7}/movie.tif",
                "params": CNMF_PARAMS, "outputs": None, "added_time": "2023-05-01T12:00:00",
                "ran_time": None, "algo_duration": None, "comments": None, "uuid": u,
            })
            legacy.to_pickle(pickle_path)

        pkl_add = per_call_times(pickle_add, args.pickle_writes)

        def mesmerize_core_add(i: int) -> None:  # what its add_item does around the rewrite
            on_disk = pd.read_pickle(pickle_path)  # _verify_and_lock_batch_file
            assert on_disk["uuid"].equals(legacy["uuid"])
            backup = pickle_path.with_suffix(f".picklebak.{i}")
            shutil.copyfile(pickle_path, backup)
            pickle_add(i)
            os.remove(backup)

        full_add = per_call_times(mesmerize_core_add, args.pickle_writes)
        note = f"per item; median of {n_add} adds vs {args.pickle_writes} rewrites"
        rows.append(("add: df.caiman.add_item vs append + to_pickle",
                     statistics.median(ours), statistics.median(pkl_add), note))
        rows.append(("add: BatchStore.add (cnmf params) vs append + to_pickle",
                     statistics.median(direct), statistics.median(pkl_add), note))
        rows.append(("  (info) add_item vs mesmerize-core's re-read + backup + rewrite",
                     statistics.median(ours), statistics.median(full_add), note))
        total_note = f"{n_add} adds; pickle total = {n_add} x its median"
        rows.append((f"add {n_add} one by one, total", sum(ours), statistics.median(pkl_add) * n_add, total_note))

        # (c) update one item's outputs ------------------------------------------------------
        target = records[n // 2]["uuid"]
        target_idx = int(legacy.index[legacy["uuid"] == target][0])
        new_outputs = cnmf_outputs(target)

        def store_update(i: int) -> None:
            store.update(target, outputs={**new_outputs, "n_run": i}, ran_time="2023-05-02T10:00:00")

        def pickle_update(i: int) -> None:
            legacy.at[target_idx, "outputs"] = {**new_outputs, "n_run": i}
            legacy.at[target_idx, "ran_time"] = "2023-05-02T10:00:00"
            legacy.to_pickle(pickle_path)

        upd = per_call_times(store_update, max(args.pickle_writes, 200))
        pkl_upd = per_call_times(pickle_update, args.pickle_writes)
        rows.append(("update outputs: BatchStore.update vs set cell + to_pickle",
                     statistics.median(upd), statistics.median(pkl_upd),
                     f"median of {len(upd)} vs {len(pkl_upd)}"))
        store.close()

    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'ours':>12}  {'pickle':>12}  {'ours is':>15}  note")
    for name, a, b, note in rows:
        ratio = f"{b / a:7.1f}x faster" if b >= a else f"{a / b:7.1f}x slower"
        print(f"{name:<{width}}  {fmt(a)}  {fmt(b)}  {ratio:>15}  {note}")

    open_ratio = t_ours / t_pkl
    add_ratio = statistics.median(pkl_add) / statistics.median(ours)
    upd_ratio = statistics.median(pkl_upd) / statistics.median(upd)
    print("\ngoals at this size:")
    print(f"  add item  >= 10x faster than the pickle rewrite: {add_ratio:8.2f}x  "
          f"{'met' if add_ratio >= 10 else 'NOT met'}")
    print(f"  update    >= 10x faster than the pickle rewrite: {upd_ratio:8.2f}x  "
          f"{'met' if upd_ratio >= 10 else 'NOT met'}")
    print(f"  open within 3x of unpickling (ours / pickle):    {open_ratio:8.2f}x  "
          f"{'met' if open_ratio <= 3 else 'NOT met'}")
    print(f"\n(ran in {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
