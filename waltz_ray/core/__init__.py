"""The pure WaltzRL core: protocol, rewards, samples, advantages, losses.

No I/O; never imports ray, vllm or deepspeed."""
