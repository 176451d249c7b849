"""HTTP routes and request/response models."""
