"""Storage: the manifest (read, check, write), shard files opened for search, row stores, .npy appenders."""
