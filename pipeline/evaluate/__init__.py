"""Measure the features: DINO weighted k-NN and a linear probe on frozen features.

labels (label files, folder labels, the train/val split) -> knn, linear (the two classifiers) -> run (the stage).
"""
