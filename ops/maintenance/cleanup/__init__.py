"""The clean step (delete only what is verified and unchanged) and compaction of old runs."""
