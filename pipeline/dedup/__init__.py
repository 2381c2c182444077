"""Stage 3, dedup: exact, perceptual and embedding near-duplicates → components → one keeper each."""
