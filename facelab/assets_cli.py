"""``facelab assets fetch|verify|list|path``."""

from __future__ import annotations

import argparse
import sys

from facelab import assets


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="fetch missing assets into the cache and verify them")
    f.add_argument("names", nargs="*", help="asset names (default: all)")
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    v = sub.add_parser("verify", help="check the sha256 of every cached asset")
    v.add_argument("names", nargs="*")
    sub.add_parser("list", help="list assets with their source and sha256")
    sub.add_parser("home", help="print the cache folder")


def main(args: argparse.Namespace) -> int:
    if args.action == "home":
        print(assets.home())
        return 0
    if args.action == "list":
        for n in assets.names():
            a = assets.REGISTRY[n]
            print(f"{n}\t{a.spec}:{a.member}\t{a.sha256}")
        return 0
    if args.action == "fetch":
        try:
            files = assets.fetch(args.names or None, force=args.force)
        except assets.AssetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{len(files)} assets verified in {assets.home() / 'assets'}")
        return 0
    report = assets.verify(args.names or None)
    for n, status in report.items():
        print(f"{status:8s} {n}")
    bad = [n for n, s in report.items() if s != "ok"]
    if bad:
        print(f"error: {len(bad)} asset(s) missing or not matching their sha256: {', '.join(bad)}", file=sys.stderr)
        print(assets.verify_hint(report), file=sys.stderr)
        return 1
    return 0
