"""Write a tiny random-weight LLaMA model in GGUF, so llama.cpp has something to serve offline.

No model hub is reachable and no weights are committed, so the local stack makes its chat model
at first start. The text it generates is gibberish, but llama.cpp really loads, tokenizes,
samples and streams it, so protocol, streaming and timing through the gateway are real.

Runs in the engines venv (needs `gguf` and `numpy`):
    .venv-engines/bin/python -m synapse.local.tinyllama OUT.gguf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# A few hundred real words make the gibberish readable; bytes cover every other input.
_WORD_TEXT = """
the of and to in is was for on that with as by at from it be this are or an have not which one
you had were but all they their there can been has if more when will would who so no time about
out up them into do only other new some could these then two first may any like now my such
make over our even most me state after also made many did must before back see through way
where get much go well your know should down work year because come people just say each those
take day good how long little world man great old life own here think both under last never
place same another while us might part high small large next early young important few public
bad able model token stream chat answer question server local engine gateway request fallback
speech voice text sound light water river mountain city road music
"""
_WORDS = _WORD_TEXT.split()

VERSION = 1  # bump when the model changes: the stack keys its cached file on it
_N_EMBD = 64
_N_HEAD = 4
_N_HEAD_KV = 2
_N_FF = 128
_N_LAYER = 2
_N_CTX = 2048
_EOS = 4  # <|im_end|>: ends a chatml turn
_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    """SentencePiece-style vocabulary: specials, 256 byte tokens, letters, then words."""
    import gguf

    tt = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [tt.UNKNOWN, tt.CONTROL, tt.CONTROL, tt.CONTROL, tt.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [tt.BYTE] * 256
    pieces = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [f"\u2581{w}" for w in dict.fromkeys(_WORDS)]
    tokens += pieces
    types += [tt.NORMAL] * len(pieces)
    # Longer pieces score higher so the tokenizer prefers whole words.
    scores = [0.0] * (len(tokens) - len(pieces)) + [float(len(p)) for p in pieces]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: Path, seed: int = 0) -> Path:
    """Write the model to `path` (atomically) and return it; deterministic for a given seed."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    head_dim = _N_EMBD // _N_HEAD
    n_embd_kv = head_dim * _N_HEAD_KV

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("synapse-tiny-llama (random weights)")
    writer.add_context_length(_N_CTX)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYER)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD_KV)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(_EOS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(_CHATML)

    writer.add_tensor("token_embd.weight", rand(n_vocab, _N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
    # Byte and control tokens get zero logits, so sampling picks words (and now and then the
    # end-of-turn token, which keeps a random word's weights): the gibberish reads as words.
    output = rand(n_vocab, _N_EMBD)
    output[[i for i, t in enumerate(types) if t != gguf.TokenType.NORMAL and i != _EOS]] = 0.0
    writer.add_tensor("output.weight", output)
    for i in range(_N_LAYER):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", rand(_N_EMBD, _N_EMBD))
        writer.add_tensor(f"{blk}.attn_k.weight", rand(n_embd_kv, _N_EMBD))
        writer.add_tensor(f"{blk}.attn_v.weight", rand(n_embd_kv, _N_EMBD))
        writer.add_tensor(f"{blk}.attn_output.weight", rand(_N_EMBD, _N_EMBD))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", rand(_N_FF, _N_EMBD))
        writer.add_tensor(f"{blk}.ffn_up.weight", rand(_N_FF, _N_EMBD))
        writer.add_tensor(f"{blk}.ffn_down.weight", rand(_N_EMBD, _N_FF))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the .gguf file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_tiny_llama(args.out, args.seed)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
