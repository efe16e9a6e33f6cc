"""What watches a run: the observer protocol, progress, previews, snapshots and checkpoints, and the
results handed back."""
