"""`python -m bench [name ...]`: the benchmarks (all by default), figures printed as ratios to a
baseline of the same run. Names: cold_start, gmail_sync, graph_sync."""

import sys

from bench import cold_start, gmail_sync, graph_sync

BENCHES = {
    "cold_start": cold_start.main,
    "gmail_sync": gmail_sync.main,
    "graph_sync": graph_sync.main,
}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    for number, name in enumerate(chosen):
        if number:
            print()
        BENCHES[name]()
