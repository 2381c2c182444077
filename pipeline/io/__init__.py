"""Reading and writing: shard lists, image decoding, perceptual hashes, samples, schemas, feature roots."""
