"""Tests of pipeline/dedup, one file per module."""
