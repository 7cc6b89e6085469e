"""Getting files back: restore by run or by original path, and find in the catalogue."""
