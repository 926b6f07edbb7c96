"""`python -m bench [name ...]`: the benchmarks (all by default), figures printed as ratios to a
baseline of the same run, with their targets. Names: cold_start, gmail_sync, graph_sync,
calendar_sync, push_latency, back_import. Sizes: BENCH_SYNC_SIZES=100,1000,
BENCH_CALENDAR_SIZES=100,1000, BENCH_PUSHES=200,
BENCH_IMPORT_N=20000 (see bench/README.md)."""

import importlib
import sys

BENCHES = ["cold_start", "gmail_sync", "graph_sync", "calendar_sync", "push_latency", "back_import"]

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    for number, name in enumerate(chosen):
        if number:
            print()
        importlib.import_module(f"bench.{name}").main()
