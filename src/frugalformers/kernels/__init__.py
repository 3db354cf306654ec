"""GPU kernels (Triton), one file each; they import nothing from `nn`, `models` or above. Blocks call
them through one function per job and fall back to PyTorch where a kernel does not apply
(`triton_support.runs_on`: CUDA, or the CPU under Triton's interpreter in the tests).

- `decode_attention`: grouped-query flash-decoding over a static KV cache (decoding on CUDA).
- `word_experts`: the MoWE expert FFN reading the bank in place, and its routing.
- `lazy_adamw`: the row-sparse (lazy) AdamW update of the MoWE bank.
"""
