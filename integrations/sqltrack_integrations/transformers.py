"""Hugging Face TrainerCallback (SQLTrackCallback) for sqltrack-core: not implemented yet, see the roadmap in README.md."""
