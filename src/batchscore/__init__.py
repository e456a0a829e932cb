"""batchscore: score whole text corpora with a Hugging Face sequence classifier."""

__version__ = "0.1.0"
