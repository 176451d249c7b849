"""Gateway: the one public door to Jejaring."""
