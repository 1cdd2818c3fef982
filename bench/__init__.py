"""The pieces of `scripts/bench`: shared plumbing, the data, the peers, and one module per table."""
