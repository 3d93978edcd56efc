"""``cotscope store``: merge, migrate, verify and describe activation stores.

    cotscope store merge A B … --out C [--overwrite]   parts of one collection → one store (bit-identical
                                                        to a one-process run when the parts share a batch size)
    cotscope store migrate DIR                         convert a format-1 store to format 2 in place (resumable)
    cotscope store verify DIR                          check every shard's size and sha256
    cotscope store info DIR                            format, dtype, layers, token rules, shards, size

>>> main(["info", "runs/demo/stores/llm"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cotscope store", description="Merge, migrate, verify and describe activation stores."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="merge stores written by workers / --shard parts of one collection")
    m.add_argument("stores", nargs="+", type=Path, help="input stores (complete, or finished parts)")
    m.add_argument("--out", required=True, type=Path, help="output store directory (new or empty)")
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    g = sub.add_parser("migrate", help="convert a format-1 store to format 2 in place")
    g.add_argument("store", type=Path)
    v = sub.add_parser("verify", help="check every shard against its recorded size and sha256")
    v.add_argument("store", type=Path)
    i = sub.add_parser("info", help="describe a store")
    i.add_argument("store", type=Path)
    i.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``cotscope store …``; returns the exit status (errors print one line to stderr, status 2)."""
    from cotscope.analyses.io.lock import LockedError
    from cotscope.analyses.io.store import ActivationStore, StoreError, read_index, read_manifest

    args = _parser().parse_args(argv)
    try:
        if args.cmd == "merge":
            from cotscope.analyses.io.merge import merge_stores

            st = merge_stores(args.stores, args.out, overwrite=args.overwrite)
            print(f"merged {len(args.stores)} stores into {st.path}: {st.n_items} items, {len(st.shards)} shards")
        elif args.cmd == "migrate":
            from cotscope.analyses.io.migrate import migrate_store

            before = read_manifest(args.store).get("format_version")
            migrate_store(args.store, progress=True)
            print(f"{args.store}: format {before} -> {read_manifest(args.store)['format_version']}")
        elif args.cmd == "verify":
            st = ActivationStore(args.store, allow_incomplete=True, allow_partial=True)
            st.verify()
            print(f"{args.store}: {len(st.shards)} shards, sizes and sha256 ok")
        else:
            man = read_manifest(args.store)
            idx = (
                read_index(args.store)
                if man.get("format_version") == 2
                else {int(s["index"]): s for s in man["shards"]}
            )
            info = {
                "path": str(args.store),
                "format_version": man.get("format_version"),
                "dtype": man.get("dtype", "float32"),
                "model": man.get("model", {}).get("model_id"),
                "layers": man.get("layers"),
                "positions": man.get("positions"),
                "n_items": man.get("n_items"),
                "batch_size": man.get("batch_size"),
                "part": man.get("part"),
                "complete": man.get("complete"),
                "shards": len(idx),
                "bytes": sum(int(e["bytes"]) for e in idx.values()),
                "config_hash": man.get("config_hash"),
            }
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                for k, v in info.items():
                    print(f"{k:15s} {v}")
    except (StoreError, LockedError) as e:
        print(f"cotscope store {args.cmd}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
