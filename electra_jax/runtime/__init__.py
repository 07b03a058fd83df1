"""What a run stands on: the device mesh and where arrays live on it (sharding),
the processes that share it (distributed) and the flags that lay them out
(cluster_flags), Orbax checkpoints (checkpointing), and files written whole or
not at all (fileio)."""
