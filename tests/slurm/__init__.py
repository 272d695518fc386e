"""A single-node SLURM cluster for the tests (cluster.py) and its configuration template."""
