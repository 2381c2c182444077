"""Measure the features: DINO weighted k-NN and a linear probe on frozen features."""
