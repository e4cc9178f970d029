-- Cast keys (issue 14): for float32, float16 and bfloat16 tensors, hashes of the elements cast
-- to bfloat16 (`bf16_hash`) and cast to float16 and then bfloat16 (`bf16_via_fp16_hash`, NULL
-- when equal), without the dtype, so a fine-tune that loaded the weights in another floating
-- dtype still finds the run that produced them. Rows written before this migration have none:
-- they match exactly only.
ALTER TABLE tensor_fingerprints ADD COLUMN bf16_hash TEXT;
ALTER TABLE tensor_fingerprints ADD COLUMN bf16_via_fp16_hash TEXT;
CREATE INDEX tensor_fingerprints_bf16_hash_idx ON tensor_fingerprints (bf16_hash);
CREATE INDEX tensor_fingerprints_bf16_via_fp16_hash_idx
    ON tensor_fingerprints (bf16_via_fp16_hash);
