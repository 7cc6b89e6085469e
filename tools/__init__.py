"""Tools that drive the toolkit from the outside, as cron and an operator would.

  bench/      the benchmark behind ``make bench`` (scripts/bench.py)
  chaos/      the fault campaign behind ``make chaos`` (scripts/chaos.py)
  core_latency.py  the stand-in core (scripts/core_latency.py), standard library only
  sandbox.py  a throw-away QTS host and the real scripts run in it, shared by the campaign
              and the tests

Nothing in ops imports these.
"""
