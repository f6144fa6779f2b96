"""Training data sets: versioned, tenant-owned, stored in content-addressed shards with a sample index.

The library functions the erasure jobs call are re-exported by ``service.datasets.logic``.
"""
