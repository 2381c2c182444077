"""Tests of pipeline/index, one file per module."""
