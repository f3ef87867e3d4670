"""Training: engines (single process, torchrun DDP, DeepSpeed), losses and the finetune loop."""
