"""Storage: the stores where artifacts live (directory, S3) and the local chunk cache. Knows nothing of FUSE."""
