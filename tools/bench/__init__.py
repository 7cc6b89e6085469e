"""The benchmark behind ``make bench`` (scripts/bench.py): QTS Ops timed against a shell
pipeline with the same guarantees, restic, GNU tar and the disk's floor, on data built once
under bench/ and reused; the figures go to bench/results/.

  cli.py       the command line: options, the run, the results file
  datasets.py  the pristine datasets (sizes, builders, stamps) and tree helpers
  rows.py      the rows, each timed on a fresh copy of the data, and the SCALE points
  timing.py    a child process timed (wall, peak RSS, CPU), the machine's noise and facts
  report.py    medians, targets and the tables

Nothing here imports ``ops`` (but for one look at the config schema): the benchmark measures
the toolkit from the outside, the way cron runs it (the step scripts as child processes),
next to the tools it competes with.
"""
