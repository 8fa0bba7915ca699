"""Converters from caption datasets (ShareGPT4V json, CSV tables) to webdataset shards."""
