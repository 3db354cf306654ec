"""More than one process: torchrun data parallelism (DDP / FSDP2), expert parallelism for the
MoE layer and the MoWE bank, world-size-independent checkpoints."""
