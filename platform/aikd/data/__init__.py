"""Face data: the shard format, synthetic faces, ingest converters and Ray Data pipelines."""
