"""The fleet benchmark (bench/run.py is its command line; see bench/README.md)."""
