"""Smoke tests of the scripts in benchmarks/ at tiny sizes."""
