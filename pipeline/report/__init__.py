"""Show: static HTML reports of an output root, search pages, and the DINOv2 patch-PCA picture."""
