"""What an output root holds, read through layout and provenance: feature sets, image sources, --where."""
