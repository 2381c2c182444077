"""Acting on a dedup of an image folder: move the duplicates aside or link the keepers, with a manifest to undo."""
