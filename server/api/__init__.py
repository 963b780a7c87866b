"""HTTP handlers, one module per endpoint family (named after the route)."""
