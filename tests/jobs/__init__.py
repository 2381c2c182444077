"""Tests of jobs/: the command line as a user meets it (python -m jobs.<stage> and dinocurate <stage>)."""
