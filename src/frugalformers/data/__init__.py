"""Real data from registry packages: sources, readers, datasets, tokenizer, shards, objectives, tasks."""
