"""Tests of pipeline/curate, one file per module."""
