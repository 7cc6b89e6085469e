"""What an operator reads: status."""
