"""Keras 3 callback (SQLTrackKerasCallback) for sqltrack-core: not implemented yet, see the roadmap in README.md."""
