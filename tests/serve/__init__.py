"""Tests of pipeline/serve: the search and review server on a real loopback port."""
