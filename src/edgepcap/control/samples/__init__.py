"""Sampled traffic history: 1-in-N, 160-byte samples kept for 24 h, queried by sample captures."""
