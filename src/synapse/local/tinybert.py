"""Write a tiny random-weight BERT in Hugging Face format, for vLLM's pooling runner offline.

The embedding counterpart of `tinyhf` (same reasons: no model hub, no committed weights, no
torch on the way): a WordPiece tokenizer trained here by `tokenizers` and a 2-layer BertModel
(head size 32, which vLLM's CPU attention accepts). vLLM serves it with `--runner pooling` as an
OpenAI `/v1/embeddings` model (CLS pooling, normalized): its vectors mean nothing, but vLLM
really tokenizes, schedules and batches concurrent requests, so throughput and protocol through
the gateway are real. `--dtype` changes the vectors slightly, as an engine's quantization does.

Runs in the vLLM venv (needs `numpy`, `safetensors`, `tokenizers`):
    .venv-vllm/bin/python -m synapse.local.tinybert OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from synapse.local.tinyhf import _TRAINING_TEXT, cli, save_model

VERSION = 1  # bump when the model changes: callers key their cached directory on it
MAX_POSITIONS = 512
HIDDEN, INTERMEDIATE, LAYERS, HEADS = 128, 256, 2, 4  # head_dim 32: vLLM CPU takes it
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
_SPECIALS = [PAD, UNK, CLS, SEP, MASK]


def _tokenizer(vocab_size: int) -> object:
    """BERT's uncased WordPiece: lower-cased, split on whitespace and punctuation."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIALS, show_progress=False
    )
    tok.train_from_iterator(_TRAINING_TEXT.splitlines() * 4, trainer)
    cls, sep = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls), (SEP, sep)],
    )
    return tok


def _weights(vocab: int, seed: int) -> dict[str, object]:
    """BertModel's tensors (no pooler head: vLLM pools the CLS state), normal(0, 0.02)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> object:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm(name: str) -> dict[str, object]:
        return {
            f"{name}.weight": np.ones(HIDDEN, dtype=np.float32),
            f"{name}.bias": np.zeros(HIDDEN, dtype=np.float32),
        }

    tensors = {
        "embeddings.word_embeddings.weight": rand(vocab, HIDDEN),
        "embeddings.position_embeddings.weight": rand(MAX_POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": rand(2, HIDDEN),
        **norm("embeddings.LayerNorm"),
    }
    for i in range(LAYERS):
        layer = f"encoder.layer.{i}"
        for part in ("attention.self.query", "attention.self.key", "attention.self.value"):
            tensors[f"{layer}.{part}.weight"] = rand(HIDDEN, HIDDEN)
            tensors[f"{layer}.{part}.bias"] = rand(HIDDEN)
        tensors |= {
            f"{layer}.attention.output.dense.weight": rand(HIDDEN, HIDDEN),
            f"{layer}.attention.output.dense.bias": rand(HIDDEN),
            **norm(f"{layer}.attention.output.LayerNorm"),
            f"{layer}.intermediate.dense.weight": rand(INTERMEDIATE, HIDDEN),
            f"{layer}.intermediate.dense.bias": rand(INTERMEDIATE),
            f"{layer}.output.dense.weight": rand(HIDDEN, INTERMEDIATE),
            f"{layer}.output.dense.bias": rand(HIDDEN),
            **norm(f"{layer}.output.LayerNorm"),
        }
    return tensors


def write_tiny_bert(out: Path, seed: int = 0) -> Path:
    """Write config, weights and tokenizer into `out` (atomically). The weights follow from
    `seed` and the vocabulary; the WordPiece trainer breaks ties its own way, so the vocabulary
    (and so the vectors) can differ between two writes: callers keep the first (VERSION)."""
    tok = _tokenizer(1024)
    vocab = tok.get_vocab_size()
    names = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **names,
        "mask_token": MASK,
        "model_max_length": MAX_POSITIONS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": tok.token_to_id(PAD),
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }
    files = {
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {**names, "mask_token": MASK},
        "config.json": config,
    }
    return save_model(out, tok, files, _weights(vocab, seed))


def main(argv: list[str] | None = None) -> int:
    return cli(write_tiny_bert, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
