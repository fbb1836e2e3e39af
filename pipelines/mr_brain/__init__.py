"""``mr-brain``: brain extraction on T1-weighted head MR with deepbet's published networks.

deepbet (Fisch et al. 2024, MIT) ships two TorchScript networks in its wheel;
this pipeline runs them exactly as deepbet does (RAS canonical axes, its
quantile normalisation, 128³ bounding-box network, 256³ brain network on the
crop, largest component, holes filled) and maps the mask back onto the
source frames.  Install with ``pip install 'pacs-ai-node[brain]'``.
"""
