"""Geometry of 3-D shapes: binary masks and meshes to (truncated) signed distance fields and back to meshes."""
