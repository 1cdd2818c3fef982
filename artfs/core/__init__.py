"""The core: artifacts, versions, aliases, manifests, packs, commits. Knows stores, never FUSE."""
