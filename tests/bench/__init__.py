"""Tests of pipeline/bench, one file per module."""
