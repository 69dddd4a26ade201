"""Pre-training: the loop, checkpoints, DDP (SPEC 8). See `netflowgen.train.pretrain`; DDP runs
through the command's own module: `torchrun --nproc_per_node N -m netflowgen.cli.pretrain ...`."""
