"""The fault-injecting destination (faultdest.py) and the sitecustomize.py that installs it
in every process of a chain started with this directory on PYTHONPATH."""
