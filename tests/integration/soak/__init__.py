"""The load run (`make soak`: 60 s and 10,000 requests; a short variant runs in `make test`)."""
