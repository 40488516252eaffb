"""Deployments (what should run) and instances (what runs), and the reconciler between them."""
