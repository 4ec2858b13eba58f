"""fineprune: fine-pruning of Hugging Face transformer encoders."""
