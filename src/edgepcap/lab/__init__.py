"""The lab: edge machines, a client and customers in network namespaces, with real agents."""
