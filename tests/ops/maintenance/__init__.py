"""Each pipeline step alone, through the real scripts, and the operators' automation guide."""
