"""``row.cnmf.evaluation()`` in a script: thresholds, manual overrides and one save, on real files.

Items hold the simulation's ground truth with known SNR / r-values (as in test_cnmf_accessors),
plus one real builtin CNMF run; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_cnmf_accessors import DIMS, RVAL, SNR, K, T, accept, make_item

import mesmerize_widgets as mw
from mesmerize_widgets.accessors import cnmf as cnmf_acc
from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf, save_cnmf
from mesmerize_widgets.sim import simulate_2p

Q = {"min_SNR": 2.5, "rval_thr": 0.8, "SNR_lowest": 0.5, "rval_lowest": -1}  # what make_item stores


@pytest.fixture(scope="module")
def sim():
    return simulate_2p(n_frames=T, dims=DIMS, n_neurons=K, motion=None, seed=3, noise=2.0)


@pytest.fixture
def item(batch, raw_dir, sim):
    cnmf_acc.clear_cache()
    return make_item(batch, raw_dir, sim)


def test_a_session_changes_thresholds_and_overrides_then_saves_once(item):
    df, row, est, store = item
    path = row.cnmf.get_output_path()
    stamp = path.stat().st_mtime_ns
    ev = row.cnmf.evaluation()
    assert ev.thresholds == Q and ev.good.tolist() == accept(SNR, RVAL, Q).tolist()
    seen = []
    ev.on_change(lambda s: seen.append(s.good.tolist()))

    loose = {"min_SNR": 0.9, "rval_thr": 0.0}
    ev.set_thresholds(**loose)
    expect = accept(SNR, RVAL, {**Q, **loose}).tolist()
    assert ev.good.tolist() == expect and seen[-1] == expect
    ev.reject(expect[0])  # by hand, whatever the thresholds say
    bad = sorted(set(range(K)) - set(expect))
    ev.accept(bad[0])
    ev.accept(expect[1])  # an override that agrees with the thresholds is kept as one too
    ev.clear_override(expect[1])
    final = sorted(set(expect) - {expect[0]} | {bad[0]})
    assert ev.good.tolist() == final and ev.overrides == {expect[0]: False, bad[0]: True}
    ev.set_thresholds(min_SNR=0.9)  # thresholds move; the overrides stay on top
    assert ev.good.tolist() == final
    np.testing.assert_array_equal(ev.classify({"min_SNR": 100.0, "rval_thr": 2.0}), np.isin(np.arange(K), [bad[0]]))
    assert ev.good.tolist() == final  # classify() changes nothing
    assert path.stat().st_mtime_ns == stamp  # nothing written before save
    with pytest.raises(KeyError, match="merge_thr"):
        ev.set_thresholds(merge_thr=0.5)
    with pytest.raises(IndexError):
        ev.reject(K)
    assert ev.good.tolist() == final and ev.thresholds["min_SNR"] == 0.9

    out = ev.save()
    assert out["accepted"].tolist() == final and out["overrides"] == ev.overrides
    # one version of the file holds both the new thresholds and the manual choices
    res = load_cnmf(path)
    assert res.estimates.idx_components.tolist() == final and res.params.quality["rval_thr"] == 0.0
    assert res.estimates.idx_components_bad.tolist() == sorted(set(range(K)) - set(final))
    np.testing.assert_array_equal(res.estimates.C, est.C)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    # a fresh load of the batch sees it, through the accessor and the store
    cnmf_acc.clear_cache()
    again = mw.load_batch(df.attrs["batch_path"]).iloc[0]
    assert again.cnmf.get_good_components().tolist() == final
    assert again["params"]["eval"] == {**Q, **loose, "manual": {"accepted": [bad[0]], "rejected": [expect[0]]}}
    assert row["params"]["eval"] == again["params"]["eval"]  # the script's own row follows
    fresh = again.cnmf.evaluation()
    assert fresh.good.tolist() == final and fresh.thresholds == {**Q, **loose} and fresh.overrides == {}


def test_what_a_session_shows_is_what_run_eval_writes(item):
    """Same rule, same inputs: the session's classification of stored CNN predictions included."""
    df, row, est, store = item
    path = row.cnmf.get_output_path()
    res = load_cnmf(path)
    preds = np.array([0.95, 0.05, 0.5, 0.5, 0.99, 0.5, 0.5, 0.5])
    save_cnmf(path, dataclasses.replace(res.estimates, cnn_preds=preds), res.params, dims=res.dims,
              mmap_file=res.mmap_file)
    cnmf_acc.clear_cache()
    ev = row.cnmf.evaluation()
    q = {"use_cnn": True, "min_cnn_thr": 0.9, "cnn_lowest": 0.1, "min_SNR": 100, "rval_thr": 2,
         "SNR_lowest": 0.1, "rval_lowest": -0.95}
    shown = ev.set_thresholds(**q).copy()
    row.cnmf.run_eval(q)
    assert row.cnmf.get_good_components().tolist() == np.flatnonzero(shown).tolist() == [0, 4]


def test_a_result_without_metrics_takes_only_manual_choices(item):
    df, row, est, store = item
    path = row.cnmf.get_output_path()
    res = load_cnmf(path)
    save_cnmf(path, dataclasses.replace(res.estimates, SNR_comp=None, r_values=None), res.params,
              dims=res.dims, mmap_file=res.mmap_file)
    cnmf_acc.clear_cache()
    ev = row.cnmf.evaluation()
    stored = row.cnmf.get_good_components().tolist()
    assert not ev.has_metrics and ev.good.tolist() == stored
    with pytest.raises(ValueError, match="no SNR / r-values"):
        ev.set_thresholds(min_SNR=1.0)
    stamp = path.stat().st_mtime_ns
    assert ev.save()["overrides"] == {} and path.stat().st_mtime_ns == stamp  # nothing to write
    ev.reject(stored[0])
    ev.save()
    cnmf_acc.clear_cache()
    assert row.cnmf.get_good_components().tolist() == stored[1:]
    assert store.get(row["uuid"])["params"]["eval"] == {"manual": {"accepted": [], "rejected": [stored[0]]}}
    with pytest.raises(ValueError, match="no quality metrics"):
        row.cnmf.run_eval({"min_SNR": 1.0}, manual={0: True})


def test_a_session_on_a_real_builtin_run(batch, raw_dir):
    """The builtin CNMF's own output (its stored params and kinetics metric) evaluates and saves."""
    cnmf_acc.clear_cache()
    sim = simulate_2p(n_frames=300, dims=(48, 48), n_neurons=8, motion=None, seed=2)
    tifffile.imwrite(raw_dir / "m.tif", np.asarray(sim.movie, np.float32))
    batch.caiman.add_item("cnmf", "c", "m.tif", {"main": {"gSig": (4, 4), "K": 12, "p": 1}})
    batch.caiman.run(progress=False, max_workers=1)
    row = batch.iloc[0]
    assert row["status"] == "done", row["error"]
    ev = row.cnmf.evaluation()
    assert ev.good.tolist() == row.cnmf.get_good_components().tolist()
    n = ev.n_components
    assert n >= 2
    assert ev.set_thresholds(min_SNR=1e9, rval_thr=2.0).sum() == 0  # nothing passes
    ev.accept(1)
    ev.save()
    cnmf_acc.clear_cache()
    reloaded = mw.load_batch(Path(batch.attrs["batch_path"])).iloc[0]
    assert reloaded.cnmf.get_good_components().tolist() == [1]
    assert reloaded.cnmf.get_bad_components().tolist() == [k for k in range(n) if k != 1]
    assert reloaded["params"]["eval"]["manual"] == {"accepted": [1], "rejected": []}
