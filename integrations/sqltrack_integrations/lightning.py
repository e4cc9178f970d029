"""PyTorch Lightning logger (SQLTrackLogger) for sqltrack-core: not implemented yet, see the roadmap in README.md."""
