import torch

# The suite's tensors are small: one intra-op thread avoids thread start-up and
# contention costs that dominate small ops on a shared 2-core machine.
torch.set_num_threads(1)
