"""`python -m bench`: every benchmark, figures printed as ratios to a baseline of the same run."""

from bench import cold_start

if __name__ == "__main__":
    cold_start.main()
