"""OnACID through CaImAn itself: ``online_cnmf.OnACID(params=CNMFParams(params_dict=main))``.

``fit_online`` reads the item's movie file directly (CaImAn loads it frame by frame); the result
is saved with CaImAn's ``save()`` as ``{uuid}.hdf5``, plus the same extra outputs as the builtin
backend (shifts, components over time, projections). CaImAn's OnACID records components over
time only as the frames where each was added (``time_neuron_added``), from which the count
per frame is rebuilt. ``CAIMAN_TEMP`` points at the output directory while it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...arrays import open_movie
from ..caiman_env import set_caiman_temp
from ..cnmf.builtin import load_masks
from ..context import RunContext
from ..images import SummaryAccumulator
from ..summary.builtin import save_summary_images
from .builtin import CHUNK, MIN_FRAMES, _check_finite


def _main_for_caiman(params: dict[str, Any]) -> dict[str, Any]:
    """Only the keys the user set (CaImAn fills its defaults); CNN off unless asked for."""
    main = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.get("main", {}).items()}
    main.setdefault("use_cnn", False)
    main.setdefault("sniper_mode", False)
    return main


def run(ctx: RunContext) -> dict[str, Any]:
    """OnACID with CaImAn."""
    from caiman.source_extraction.cnmf import online_cnmf
    from caiman.source_extraction.cnmf.params import CNMFParams

    main = _main_for_caiman(ctx.params)
    movie = open_movie(ctx.input_path, var_name_hdf5=main.get("var_name_hdf5", "mov"))
    T = len(movie)
    if T < MIN_FRAMES:
        raise ValueError(f"{ctx.input_path} has {T} frame(s); OnACID needs at least {MIN_FRAMES}")
    init_batch = int(main.get("init_batch", 200))
    if init_batch > T:
        raise ValueError(f"init_batch={init_batch} is longer than the movie ({T} frames): set init_batch <= {T}")
    dims = (int(movie.shape[1]), int(movie.shape[2]))
    acc = SummaryAccumulator(dims)
    for s in range(0, T, CHUNK):  # NaN check and projections (CaImAn would fail deep inside)
        frames = np.asarray(movie[s : s + CHUNK], np.float32)
        _check_finite(frames, s, ctx.input_path)
        acc.add(frames)
    restore_temp = set_caiman_temp(ctx.output_dir)
    try:
        opts = CNMFParams(params_dict={**main, "fnames": [str(ctx.input_path)]})
        cnm = online_cnmf.OnACID(params=opts)
        if ctx.params.get("Ain_path"):
            cnm.estimates.A = load_masks(ctx.params["Ain_path"], dims, ctx.input_path) > 0
            opts.set("online", {"init_method": "seeded"})
        ctx.progress(0.05, "fitting online (CaImAn)")
        cnm.fit_online()
        ctx.progress(0.9, "saving")
        e = cnm.estimates
        outputs: dict[str, Any] = save_summary_images(ctx, acc)
        e.Cn = np.load(outputs["corr-img-path"])
        cnm.mmap_file = str(ctx.input_path)
        hdf5 = ctx.output(".hdf5")
        cnm.save(str(hdf5))
        shifts = np.zeros((T, 2), np.float32)
        sh = np.asarray(getattr(e, "shifts", []) or [], np.float32).reshape(-1, 2)
        n = min(len(sh), T)
        shifts[:n] = sh[:n]
        np.save(ctx.output("_shifts.npy"), shifts)
        K = 0 if e.A is None else int(e.A.shape[1])
        epochs = int(main.get("epochs", 1))
        steps = np.arange(epochs * T - init_batch + init_batch)
        added = np.array([t for _, t in getattr(cnm, "time_neuron_added", [])], int)
        counts = np.searchsorted(np.sort(added), steps, side="right")
        np.save(ctx.output("_n_components.npy"), counts.astype(np.int32))
        outputs.update({
            "cnmf-hdf5-path": Path(hdf5), "shifts": ctx.output("_shifts.npy"),
            "n-components-path": ctx.output("_n_components.npy"), "n_components": K,
            "n_accepted": K if e.idx_components is None else int(len(e.idx_components)),
        })
        ctx.progress(1.0, "done")
        return outputs
    finally:
        restore_temp()
