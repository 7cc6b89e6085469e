"""What the toolkit records of itself: the step log, the metrics textfile, the failure hook."""
