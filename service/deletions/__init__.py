"""deletions package."""
