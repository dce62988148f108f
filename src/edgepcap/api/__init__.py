"""The HTTP side of the control plane: the Cloudflare-compatible customer API."""
