"""Summary images through CaImAn's own loader and ``local_correlations``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..context import RunContext


def run(ctx: RunContext) -> dict[str, Any]:
    import caiman as cm  # imported here: it takes seconds and is optional

    p = ctx.main
    subindices = None if p.get("max_frames") is None else slice(0, p["max_frames"])
    mov = cm.load(str(ctx.input_path), var_name_hdf5=p.get("var_name_hdf5", "mov"), subindices=subindices)
    ctx.progress(0.5, "loaded")
    outputs: dict[str, Any] = {}
    for kind, fn in (("mean", np.mean), ("std", np.std), ("max", np.max)):
        path = ctx.output(f"_{kind}_projection.npy")
        np.save(path, fn(np.asarray(mov), axis=0).astype(np.float32))
        outputs[f"{kind}-projection-path"] = path
    corr = ctx.output("_cn.npy")
    image = cm.summary_images.local_correlations(
        mov, eight_neighbours=p.get("eight_neighbours", True), swap_dim=False
    )
    np.save(corr, np.asarray(image, dtype=np.float32))
    outputs["corr-img-path"] = corr
    outputs["n_frames"] = int(mov.shape[0])
    outputs["dims"] = tuple(int(d) for d in mov.shape[1:3])
    ctx.progress(1.0, "done")
    return outputs
