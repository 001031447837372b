"""Flask blueprints for the pages, samples, status and operations routes, each thin glue over the data plane.

The predict routes are not here: every one goes through the one inference path, server/pipeline.py."""
