"""node: see README "Layout"."""
