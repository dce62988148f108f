"""The edge agent: runs on every edge machine, captures in the kernel, writes to buckets."""
