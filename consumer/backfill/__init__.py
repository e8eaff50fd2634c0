"""Bootstrap read models from a parallel table Scan, then hand off to the stream."""
