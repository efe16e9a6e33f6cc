"""What is optimized: the pure loss terms (content, style, total variation) and their weighted sum."""
