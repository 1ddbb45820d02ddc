"""Engines: what fleet does over the transport (containers, images, apply, rollout, reconcile)."""
