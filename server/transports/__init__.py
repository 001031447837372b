"""Transports beside the HTTP app (server.app): thin layers over the data plane."""
