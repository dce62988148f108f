"""edgepcap: on-demand packet captures from every edge machine."""
