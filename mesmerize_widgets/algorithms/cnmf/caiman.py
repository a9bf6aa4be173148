"""CNMF / CNMF-E through CaImAn itself (used when CaImAn is importable and sound).

Follows mesmerize-core's pipeline: the input is saved as a C-order memmap in the item's output
directory, ``cnmf.CNMF(n_processes, params=CNMFParams(params_dict=main))`` is fitted on it,
optionally refitted (``refit``, or seeded with ``Ain_path`` masks), evaluated, and saved as
``{uuid}.hdf5``. ``CAIMAN_TEMP`` points at the output directory while it runs, so CaImAn's own
temporary memmaps stay inside the item's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...processes import main_module_hidden
from ..caiman_env import set_caiman_temp
from ..context import RunContext
from ..summary.builtin import save_summary_images
from .builtin import load_masks, write_c_memmap
from .core import Options

# CaImAn's CNMF-E settings (its demo_pipeline_cnmfE) that are not init-group defaults of ours
_CNMFE_CAIMAN = {"nb_patch": 0, "low_rank_background": None, "ssub_B": 2, "del_duplicates": True}


def _main_for_caiman(params: dict[str, Any], cnmfe: bool) -> dict[str, Any]:
    """The keys the user set, as mesmerize-core passes them; CaImAn fills its own defaults,
    except where our schema's defaults differ from CaImAn's: ``use_cnn`` (False) and, for
    cnmfe items, the CNMF-E defaults (corr_pnr, nb=0 ring model, gSig/gSiz, thresholds), so
    both backends fit the same model."""
    from . import _CNMFE_DEFAULTS

    main = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.get("main", {}).items()}
    main.pop("var_name_hdf5", None)
    main.pop("memory_budget_mb", None)  # the builtin's; CaImAn holds whole patches in memory
    if cnmfe:
        for k, v in {**_CNMFE_DEFAULTS, **_CNMFE_CAIMAN}.items():
            main.setdefault(k, list(v) if isinstance(v, tuple) else v)
    main.setdefault("use_cnn", False)  # our schema's default; True needs the model weights
    return main


def _run(ctx: RunContext, cnmfe: bool) -> dict[str, Any]:
    import caiman as cm  # optional, slow to import
    from caiman.source_extraction.cnmf import cnmf as cnmf_mod
    from caiman.source_extraction.cnmf.params import CNMFParams

    restore_temp = set_caiman_temp(ctx.output_dir)
    dview = None
    try:
        mmap, acc, dims, n = write_c_memmap(ctx, Options().held_bytes)  # the builtin's default chunks
        main = _main_for_caiman(ctx.params, cnmfe)
        n_proc = int(main.pop("n_processes", None) or ctx.n_processes or 1)
        Ain = None
        if ctx.params.get("Ain_path"):
            Ain = load_masks(ctx.params["Ain_path"], dims, ctx.input_path) > 0
            main["rf"] = None
            main["only_init"] = False
        params = CNMFParams(params_dict=main)
        params.change_params({"data": {"fnames": [str(mmap)], "dims": dims}})
        if n_proc > 1:
            with main_module_hidden():  # a plain script's top level must not run in the pool
                _, dview, n_proc = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=n_proc)
        Yr, dims_, T = cm.load_memmap(str(mmap))
        images = np.reshape(Yr.T, [T, *dims_], order="F")
        ctx.progress(0.15, "fitting (CaImAn)")
        cnm = cnmf_mod.CNMF(n_proc, params=params, dview=dview, Ain=Ain)
        cnm = cnm.fit(images) or cnm  # CaImAn 1.12's fit fills cnm in place and returns None
        if ctx.params.get("refit") and Ain is None:
            ctx.progress(0.6, "refitting (CaImAn)")
            cnm = cnm.refit(images, dview=dview) or cnm
        ctx.progress(0.8, "evaluating (CaImAn)")
        cnm.estimates.evaluate_components(images, cnm.params, dview=dview)
        outputs: dict[str, Any] = save_summary_images(ctx, acc)
        if cnmfe:
            cn, pnr = cm.summary_images.correlation_pnr(
                images[:: max(1, int(main.get("tsub", 1) or 1))], gSig=main.get("gSig", (3, 3))[0],
                swap_dim=False,
            )
            np.save(outputs["corr-img-path"], np.asarray(cn, np.float32))
            pnr_path = ctx.output("_pnr.npy")
            np.save(pnr_path, np.asarray(pnr, np.float32))
            outputs["pnr-image-path"] = pnr_path
        cnm.estimates.Cn = np.load(outputs["corr-img-path"])
        cnm.mmap_file = str(ctx.final_output_dir / mmap.name)
        hdf5 = ctx.output(".hdf5")
        cnm.save(str(hdf5))
        outputs["cnmf-hdf5-path"] = Path(hdf5)
        outputs["cnmf-memmap-path"] = mmap
        K = 0 if cnm.estimates.A is None else int(cnm.estimates.A.shape[1])
        outputs["n_components"] = K
        good = cnm.estimates.idx_components
        outputs["n_accepted"] = K if good is None else int(len(good))
        ctx.progress(1.0, "done")
        return outputs
    finally:
        if dview is not None:
            cm.stop_server(dview=dview)
        restore_temp()


def run(ctx: RunContext) -> dict[str, Any]:
    """CNMF with CaImAn."""
    return _run(ctx, cnmfe=False)


def run_cnmfe(ctx: RunContext) -> dict[str, Any]:
    """CNMF-E with CaImAn (the CNMF-E defaults unless main overrides them)."""
    return _run(ctx, cnmfe=True)
