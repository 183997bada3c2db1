"""cellw1.tl."""
