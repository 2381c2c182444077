"""Stage 4, curate: LVD-142M retrieval and balanced sampling of a pool, and export of selections as shards."""
