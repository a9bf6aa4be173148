"""``mesmerize-widgets demo``: build a batch from the bundled sample movies and run it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo(batch_dir: Path, max_workers: int = 2, fresh: bool = True) -> int:
    import mesmerize_widgets as mw
    from mesmerize_widgets.runner import shutdown_default_client
    from mesmerize_widgets.sim import sample_movie

    data_dir = batch_dir.parent / f"{batch_dir.name}_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    print("generating the sample movies (cached after the first run) ...", flush=True)
    movie_2p = sample_movie("2p", dest_dir=data_dir)
    movie_1p = sample_movie("1p", dest_dir=data_dir)
    mw.set_parent_raw_data_path(data_dir)
    df = mw.create_batch(batch_dir, remove_existing=fresh)
    df.caiman.add_item("summary", "2p sample", movie_2p.name, {"main": {}})
    pre = df.caiman.add_item("preprocess", "1p sample, 2x downsampled", movie_1p.name, {"main": {"ds_factor": 2}})
    df.caiman.add_item("summary", "1p sample, 2x downsampled", pre, {"main": {}})
    print(f"batch {batch_dir}: {len(df)} items; running them on a local Dask cluster ...", flush=True)
    df.caiman.run(max_workers=max_workers)
    print()
    ok = True
    for _, row in df.iterrows():
        print(f"{row['item_name']:<32} {row['algo']:<11} {row['status']:<8} {row['algo_duration'] or ''}")
        if row["status"] != "done":
            ok = False
            print(f"    error: {(row['error'] or '').strip().splitlines()[-1:]}")
            continue
        for key, value in (row["outputs"] or {}).items():
            if isinstance(value, str) and "/" in value:
                print(f"    {key:<24} {batch_dir / value}")
    print(f"\nopen it in Python: mesmerize_widgets.load_batch({str(batch_dir)!r})")
    shutdown_default_client()
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mesmerize-widgets", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="build and run a demo batch from the bundled sample movies")
    d.add_argument("batch_dir", nargs="?", default="demo_batch")
    d.add_argument("--max-workers", type=int, default=2)
    d.add_argument("--keep", action="store_true", help="keep an existing demo batch instead of recreating it")
    args = ap.parse_args(argv)
    if args.command == "demo":
        return demo(Path(args.batch_dir).resolve(), args.max_workers, fresh=not args.keep)
    return 2


if __name__ == "__main__":
    sys.exit(main())
