"""config: see README "Layout"."""
