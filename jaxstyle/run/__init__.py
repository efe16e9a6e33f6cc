"""A run from job to results: the job, each image's inputs, the compiled problem, the loop driver,
batches and stages, resuming."""
