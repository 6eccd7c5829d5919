"""The ingest job: images in object storage -> face shards (:mod:`aikd.ingest.run`)."""
