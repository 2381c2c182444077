"""Formats: shard lists, image files and decoding, perceptual hashes, samples, schemas, files, locks."""
