"""Data pipelines: webdataset/CSV training data, shard writing, and sample decoding."""
