"""Example pacs-ai-node pipeline plugin: bone (voxels above a threshold) on CT."""
