"""The local search and review server (`make serve`): one process holding the index, the model and the review."""
