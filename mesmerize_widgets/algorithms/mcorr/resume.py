"""Motion correction across attempts: the passes' templates and finished chunks are kept.

Each pass starts from a template and registers the movie chunk by chunk; a chunk's result
depends only on the template, the params and its frames. So a killed run leaves, in its
checkpoint folder, the template each pass started from and every chunk the pass finished (its
shifts, template sums and summary-image sums; the final pass's frames are already in the output
movie, which lives in the checkpoint folder until the run succeeds). A rerun starts at the last
pass with a saved template and registers only the chunks not saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import load_arrays, save_arrays
from ..images import SummaryAccumulator

log = logging.getLogger(__name__)

MOVIE_NAME = "mcorr-movie.partial"


def _template_name(k: int) -> str:
    return f"mcorr-pass-{k}-template"


def _chunk_name(k: int, start: int) -> str:
    return f"mcorr-pass-{k}-chunk-{start:010d}"


def start_pass(folder: Path | None, n_passes: int) -> tuple[int, np.ndarray | None]:
    """The last pass an earlier attempt started and its template; ``(0, None)`` when none."""
    for k in reversed(range(n_passes)):
        saved = load_arrays(folder, _template_name(k))
        if saved is not None:
            if k:
                log.info("resumed from checkpoint at pass %d of %d, from its saved template", k + 1, n_passes)
            return k, saved["template"]
    return 0, None


def save_template(folder: Path | None, k: int, template: np.ndarray) -> None:
    if folder is not None:
        save_arrays(folder, _template_name(k), template=template)


def save_chunk(folder: Path, k: int, res: dict[str, Any]) -> None:
    """Keep one chunk's result; the frames it wrote must already be on disk."""
    keys = sorted(res["sums"])
    arrays = {"start": np.array(res["start"]), "shifts": res["shifts"], "sum_keys": np.array(keys, dtype=np.int64),
              "sum_tots": np.array([np.asarray(res["sums"][key][0], dtype=np.float64) for key in keys]),
              "sum_cnts": np.array([res["sums"][key][1] for key in keys], dtype=np.int64)}
    if res["els"] is not None:
        arrays["els"] = res["els"]
    if "acc" in res:
        arrays.update({f"acc_{key}": v for key, v in res["acc"].state().items()})
    save_arrays(folder, _chunk_name(k, res["start"]), **arrays)
    log.info("chunk at frame %d of pass %d registered and saved", res["start"], k + 1)


def load_chunk(folder: Path | None, k: int, start: int) -> dict[str, Any] | None:
    """A chunk's result as :func:`process_chunk` returned it, or None when it was not saved."""
    saved = load_arrays(folder, _chunk_name(k, start))
    if saved is None or int(saved["start"]) != start:
        return None
    res: dict[str, Any] = {"start": start, "shifts": saved["shifts"], "els": saved.get("els"),
                           "sums": {int(key): (tot, int(cnt)) for key, tot, cnt in
                                    zip(saved["sum_keys"], saved["sum_tots"], saved["sum_cnts"], strict=True)}}
    acc = {key[4:]: v for key, v in saved.items() if key.startswith("acc_")}
    if acc:
        res["acc"] = SummaryAccumulator.from_state(acc)
    return res


def keep_chunks_if_written(folder: Path | None, k: int, movie: Path, nbytes: int) -> None:
    """Forget pass ``k``'s saved chunks unless the movie they were written into is there, whole."""
    if folder is None or (movie.exists() and movie.stat().st_size == nbytes):
        return
    for path in folder.glob(f"mcorr-pass-{k}-chunk-*.npz"):
        path.unlink(missing_ok=True)


def is_saved(folder: Path | None, k: int, start: int) -> bool:
    return folder is not None and (folder / f"{_chunk_name(k, start)}.npz").exists()


def results_in_order(folder: Path | None, k: int, tasks: Iterable[dict[str, Any]],
                     compute: Callable[[list[dict[str, Any]]], Iterator[dict[str, Any]]],
                     note: Callable[[list[int], int], None]) -> Iterator[dict[str, Any]]:
    """Every chunk's result in task order: saved ones loaded, the others from ``compute`` (and
    saved). ``note(saved_starts, n_chunks)`` is told what is reused before the first result."""
    tasks = list(tasks)
    saved = {t["start"] for t in tasks if is_saved(folder, k, t["start"])}
    note(sorted(saved), len(tasks))
    computed = compute([t for t in tasks if t["start"] not in saved])
    for t in tasks:
        if t["start"] in saved:
            res = load_chunk(folder, k, t["start"])
            fresh = res is None
            res = res if res is not None else next(compute([t]))  # unreadable: done again
        else:
            res, fresh = next(computed), True
        if fresh and folder is not None:
            save_chunk(folder, k, res)
        yield res
