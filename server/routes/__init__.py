"""One blueprint per area of the HTTP API; each route is thin glue: body -> codec -> data plane -> codec."""
