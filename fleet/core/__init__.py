"""core: see README "Layout"."""
