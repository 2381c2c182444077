"""Stage 2, index: Faiss indexes over extracted features, the all-vs-all k-NN graph, and search."""
