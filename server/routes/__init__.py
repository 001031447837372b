"""One blueprint per area of the HTTP API; each is a thin adapter over `server.inference`."""
