"""Write a tiny random-weight Llama in Hugging Face format, so vLLM has something to serve offline.

No model hub is reachable and no weights are committed, so the local stack makes vLLM's model at
first start: a byte-level BPE tokenizer trained here by `tokenizers`, a Jinja chat template that
renders tools and tool calls the way Llama 3.1's does (so vLLM's `llama3_json` tool parser is the
one production uses), and a 2-layer Llama whose head size (32) vLLM's CPU attention accepts.
The text it generates is gibberish; vLLM really loads, tokenizes, schedules, samples, guides
(JSON schema, forced tool calls) and streams it, so protocol facts through the gateway are real.

Weights are written with numpy and safetensors, not transformers: importing torch and
transformers takes most of a minute on a busy 2-core machine, on the way to the first answer.

Runs in the vLLM venv (needs `numpy`, `safetensors`, `tokenizers`):
    .venv-vllm/bin/python -m synapse.local.tinyhf OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSION = 1  # bump when the model changes: the stack keys its cached directory on it
MAX_POSITIONS = 2048
BOS, EOS, EOT, PYTHON_TAG = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|python_tag|>"
_HEADER_START, _HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
_SPECIALS = [BOS, EOS, _HEADER_START, _HEADER_END, EOT, PYTHON_TAG]

# Llama 3.1's layout, cut down: a turn is header, text, <|eot_id|>; tools are listed as JSON in
# the last user turn; an assistant tool call is {"name": …, "parameters": …}; a tool answer is
# role `ipython`. Message content may be a string or a list of text parts.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content -%}{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- set role = 'ipython' if message['role'] == 'tool' else message['role'] -%}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' -}}"
    "{%- if tools and loop.last and message['role'] == 'user' -%}"
    '{{- \'Functions you may call, as JSON {"name": …, "parameters": …}:\n\' -}}'
    "{%- for tool in tools -%}{{- tool | tojson }}{{ '\n' -}}{%- endfor -%}"
    "{%- endif -%}"
    "{%- if message.get('tool_calls') -%}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set args = call['function']['arguments'] -%}"
    "{{- '{\"name\": \"' + call['function']['name'] + '\", \"parameters\": ' -}}"
    "{{- (args if args is string else args | tojson) + '}' -}}"
    "{%- endfor -%}"
    "{%- else -%}{{- text(message['content']) -}}{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}"
    "{%- endif -%}"
)

_TRAINING_TEXT = """
the of and to in is was for on that with as by at from it be this are or an have not which one
you had were but all they their there can been has if more when will would who so no time about
out up them into do only other new some could these then two first may any like now my such
make over our even most me state after also made many did must before back see through way
where get much go well your know should down work year because come people just say each those
take day good how long little world man great old life own here think both under last never
place same another while us might part high small large next early young important few public
bad able model token stream chat answer question server local engine gateway request fallback
speech voice text sound light water river mountain city road music weather city unit celsius
{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}} true false null
user assistant system tool ipython function arguments required properties type object string
0 1 2 3 4 5 6 7 8 9 10 42 100 [ ] { } : , " ' . ! ? - _ ( ) / \\ \n
"""


def _tokenizer(vocab_size: int) -> object:
    """Byte-level BPE (every byte is a token, so any text and any JSON can be encoded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT.splitlines() * 4, trainer)
    return tok


HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 128, 256, 2, 4, 2  # head_dim 32: vLLM CPU takes it


def _weights(vocab: int, seed: int) -> dict[str, object]:
    """LlamaForCausalLM's tensors, normal(0, 0.02) like its own initialiser, norms at one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    head_dim = HIDDEN // HEADS

    def rand(*shape: int) -> object:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": rand(vocab, HIDDEN),
        "model.norm.weight": np.ones(HIDDEN, dtype=np.float32),
        "lm_head.weight": rand(vocab, HIDDEN),
    }
    for i in range(LAYERS):
        layer = f"model.layers.{i}"
        tensors |= {
            f"{layer}.input_layernorm.weight": np.ones(HIDDEN, dtype=np.float32),
            f"{layer}.post_attention_layernorm.weight": np.ones(HIDDEN, dtype=np.float32),
            f"{layer}.self_attn.q_proj.weight": rand(HEADS * head_dim, HIDDEN),
            f"{layer}.self_attn.k_proj.weight": rand(KV_HEADS * head_dim, HIDDEN),
            f"{layer}.self_attn.v_proj.weight": rand(KV_HEADS * head_dim, HIDDEN),
            f"{layer}.self_attn.o_proj.weight": rand(HIDDEN, HEADS * head_dim),
            f"{layer}.mlp.gate_proj.weight": rand(INTERMEDIATE, HIDDEN),
            f"{layer}.mlp.up_proj.weight": rand(INTERMEDIATE, HIDDEN),
            f"{layer}.mlp.down_proj.weight": rand(HIDDEN, INTERMEDIATE),
        }
    return tensors


def write_tiny_hf(out: Path, seed: int = 0) -> Path:
    """Write config, weights, tokenizer and template into `out` (atomically); deterministic."""
    tok = _tokenizer(1024)
    ids = {t: tok.token_to_id(t) for t in _SPECIALS}
    vocab = tok.get_vocab_size()
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOT,
        "pad_token": EOS,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    special = {"bos_token": BOS, "eos_token": EOT, "pad_token": EOS}
    eos_ids = [ids[EOS], ids[EOT]]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HIDDEN // HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": ids[BOS],
        "eos_token_id": eos_ids,
        "pad_token_id": ids[EOS],
        "torch_dtype": "float32",
    }
    generation = {"bos_token_id": ids[BOS], "eos_token_id": eos_ids, "pad_token_id": ids[EOS]}
    files = {
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special,
        "config.json": config,
        "generation_config.json": generation,
    }
    return save_model(out, tok, files, _weights(vocab, seed))


def save_model(out: Path, tokenizer: Any, files: dict[str, dict], tensors: dict) -> Path:
    """Write a Hugging Face model directory: tokenizer, JSON files, weights. Atomically (a
    staging directory renamed into place), so a directory that exists is whole."""
    from safetensors.numpy import save_file

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer.save(str(tmp / "tokenizer.json"))
    for name, data in files.items():
        (tmp / name).write_text(json.dumps(data, indent=1))
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def cli(write: Callable[[Path, int], Path], doc: str, argv: list[str] | None) -> int:
    """The command line of a tiny-model writer: OUT_DIR [--seed N]."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write(args.out, args.seed)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(write_tiny_hf, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
