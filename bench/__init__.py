"""The benchmark, run as `python -m bench` from the repo root (`scripts/bench` sets up the venv and the peers
first): shared plumbing, the data, the peers, and one module per table. The S3 server and the artfs mount
are the tests' own (tests/support)."""
