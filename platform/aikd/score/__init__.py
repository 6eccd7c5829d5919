"""Batch scoring of face galleries (``aikd score``): one quality per face and model, resumable per file.

    inputs.plan: face shards (one output file per input shard, work unit = row group)
                 or a folder of images (+ an optional landmarks/box table; one output
                 file per ``images_per_file`` images, work unit = ``batch_size`` images)
    -> actors.Aligner (CPU actor pool): read, decode, align once per view and input size -> crops
    -> actors.Scorer  (model actor pool, a GPU each on a cluster): every model on the crops
    -> run: the driver gathers each output file's rows, writes it whole, then its manifest
       entry; rejects with reasons; progress; summary; an MLflow run

The evaluation scores its faces with the same planning and actors (one view per
condition, the FR model's embeddings added): ``views`` says how each view cuts a face
out, ``setup`` what each job's spec asks of the actors.
"""
