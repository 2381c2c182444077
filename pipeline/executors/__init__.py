"""Ways to run a stage's units of work: in this process (the stages themselves) or on a Ray cluster."""
