"""modelfn's benchmark suite: `python -m bench [--quick] [--only NAME,...]` (what `make bench` runs).

Every figure runs side by side with its baseline in the same run; results go to bench/results/. Keep this module
empty: the cold-start workers import `bench.baselines` and must not pay for anything here."""
