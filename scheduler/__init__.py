"""Placement, queueing and worker lifecycle, on the front end's event loop."""
