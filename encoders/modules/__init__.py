"""Building blocks of the encoders (transformer blocks, patch embeddings, projection heads)."""
