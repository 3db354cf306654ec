"""Model families and the (family, head) -> class table used by `build_model` and `load`."""

from frugalformers.models.decoder import DecoderLM
from frugalformers.models.encoder import BertEncoder, BertForMaskedLM, BertForSequenceClassification
from frugalformers.models.outputs import ModelOutput
from frugalformers.models.t5 import T5EncoderModel, T5ForConditionalGeneration, T5Model

MODEL_CLASSES = {
    ("bert", "mlm"): BertForMaskedLM,
    ("bert", "classify"): BertForSequenceClassification,
    ("bert", "base"): BertEncoder,
    ("t5", "seq2seq"): T5ForConditionalGeneration,
    ("t5", "base"): T5Model,
    ("t5", "encoder"): T5EncoderModel,
    ("decoder", "lm"): DecoderLM,
}

__all__ = [
    "MODEL_CLASSES",
    "BertEncoder",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "DecoderLM",
    "ModelOutput",
    "T5EncoderModel",
    "T5ForConditionalGeneration",
    "T5Model",
]
