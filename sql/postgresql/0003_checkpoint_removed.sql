-- A checkpoint file its Trainer deleted later (Lightning's save_top_k, Hugging Face's
-- save_total_limit) keeps its row and fingerprints, so links made through it stay explained;
-- removed_at says the file is gone.
ALTER TABLE checkpoints ADD COLUMN removed_at TIMESTAMPTZ;
