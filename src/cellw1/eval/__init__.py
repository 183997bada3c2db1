"""cellw1.eval."""
