"""plan: see README "Layout"."""
