"""Tests of pipeline/io, one file per module."""
