"""Motion correction through CaImAn's ``MotionCorrect``, with the builtin backend's outputs.

CAIMAN_TEMP points at the item's output directory while it runs, so CaImAn's memmap lands
there; it is then renamed ``{uuid}_rig__...``/``{uuid}_els__...`` (CaImAn 1.12 names it after
the input file's stem).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...arrays import LazyMemmap, open_movie
from ...formats.memmap import memmap_name, parse_memmap_name
from ...processes import main_module_hidden
from ..caiman_env import set_caiman_temp
from ..context import RunContext
from ..summary.builtin import save_summary_images
from .common import check_movie, full_params, save_shifts, summary_of_movie

# our params that CaImAn's CNMFParams does not know
_NOT_CAIMAN = {"chunk_frames"}


def _caiman_params(p: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in p.items() if k not in _NOT_CAIMAN}
    idx = out.pop("indices", None)
    n = 3 if out.get("is3D") else 2
    out["indices"] = tuple(slice(None) for _ in range(n)) if idx is None else tuple(slice(a, b) for a, b in idx)
    if out.get("gSig_filt") is not None:
        out["gSig_filt"] = tuple(out["gSig_filt"])
    return out


def run(ctx: RunContext) -> dict[str, Any]:
    p = full_params(ctx.main)
    movie = open_movie(ctx.input_path, var_name_hdf5=p["var_name_hdf5"])
    if not p["is3D"]:
        check_movie(movie, p, str(ctx.input_path))
    del movie
    restore_temp = set_caiman_temp(ctx.output_dir)
    dview = cluster = None
    try:
        import caiman as cm  # imported here: it takes seconds and is optional
        from caiman.motion_correction import MotionCorrect
        from caiman.source_extraction.cnmf.params import CNMFParams

        if ctx.n_processes > 1:
            with main_module_hidden():  # a plain script's top level must not run in the pool
                cluster, dview, _ = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=ctx.n_processes)
        opts = CNMFParams(params_dict=_caiman_params(p))
        ctx.progress(0.05, "caiman MotionCorrect")
        # CaImAn keeps var_name_hdf5 in its data group, which MotionCorrect never reads: pass it
        motion = {**opts.get_group("motion"), "var_name_hdf5": p["var_name_hdf5"] or "mov"}
        mc = MotionCorrect([str(ctx.input_path)], dview=dview, **motion)
        mc.motion_correct(save_movie=True)
        produced = mc.mmap_file[0] if isinstance(mc.mmap_file, list) else mc.mmap_file
    finally:
        if dview is not None:
            cm.stop_server(dview=dview)
        restore_temp()
    info = parse_memmap_name(produced)
    kind = "els" if p["pw_rigid"] else "rig"
    final = ctx.output_dir / memmap_name(f"{ctx.prefix}_{kind}_", info.dims, info.n_frames, "F")
    os.replace(produced, final)
    for stray in ctx.output_dir.glob("*.mmap"):
        if stray != final:
            stray.unlink(missing_ok=True)
    ctx.progress(0.8, "summary images")
    out_movie = LazyMemmap(final)
    dims = tuple(int(d) for d in out_movie.shape[1:3])
    acc = summary_of_movie((out_movie[a : a + 256] for a in range(0, len(out_movie), 256)), dims)
    outputs = save_summary_images(ctx, acc)
    outputs["mcorr-output-path"] = final
    if p["pw_rigid"]:
        els = np.stack([np.asarray(mc.x_shifts_els), np.asarray(mc.y_shifts_els)], axis=-1)
        outputs["shifts"] = save_shifts(ctx, None, els)
    else:
        outputs["shifts"] = save_shifts(ctx, np.asarray(mc.shifts_rig), None)
    outputs["n_frames"] = int(info.n_frames)
    outputs["dims"] = dims
    ctx.progress(1.0, "done")
    return outputs
