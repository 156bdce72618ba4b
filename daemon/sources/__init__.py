"""Sources: one plug-in per file, each with its own Options model."""
