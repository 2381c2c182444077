"""Stage 1, extract: images → device-resident timm backbone → CLS and pooled patch features per image."""
