"""Teacher and student models and their tokenizers."""
