"""Container images: the deterministic demo image and reading image archives before they are sent."""
