"""WHK benchmarks: each measures its baseline and WHK side by side in the same run and prints GOAL lines."""
