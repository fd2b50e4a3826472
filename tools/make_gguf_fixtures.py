"""Tiny random-weight decoders as GGUF files made by llama.cpp's own converter, with float32 references.

For each family (llama, qwen2, qwen3, qwen3moe) this tool builds a seeded random Hugging Face
model with transformers, gives it a tiny byte-level BPE tokenizer (with ChatML markers), runs
``convert_hf_to_gguf.py`` from the llama-cpp-python 0.3.36 source archive (the one
``tools/fetch_models.py llama-cpp-vocab`` downloads) to write an f32 GGUF, and saves beside it:

- ``<family>.gguf``            the converted file (Q/K rows permuted for llama, as llama.cpp does)
- ``<family>.npz``             every HF weight (float32, HF names) and transformers' float32 logits
                               for fixed token ids (``ids_<i>`` → ``logits_<i>``, every position)
- ``<family>.config.json``     the HF config.json
- ``tokenizer.json``, ``tokenizer_config.json``   the tokenizer all four share (the GGUF files
                               carry it converted)

Only this tool imports torch / transformers; the tests read the committed files.

    python tools/make_gguf_fixtures.py            # writes plugins/format_gguf/tests/fixtures/tiny/
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402
OUT = ROOT / "plugins" / "format_gguf" / "tests" / "fixtures" / "tiny"
SEED = 1234
IDS = ([5, 17, 42, 99, 3, 250, 7], [1, 2, 3], [200, 100, 50, 25, 12, 6, 3, 1, 0, 270])

TEXT = ("The quick brown fox jumps over the lazy dog. def add(a, b):\n    return a + b\n"
        "Paris is the capital of France. 1234 5678 ünïcödé 你好 🙂 ") * 20


def checkpoint_weights(family: str, folder: Path = OUT) -> dict[str, np.ndarray]:
    """The HF weights saved in ``<family>.npz``, named as checkpoints name them: transformers 5
    keeps MoE experts fused (``experts.gate_up_proj``, ``experts.down_proj``), checkpoints and
    GGUF converters one expert at a time. The tests read the fixtures through this."""
    ref = np.load(folder / f"{family}.npz")
    weights = {}
    for key in ref.files:
        if not key.startswith("weight:"):
            continue
        name, array = key[len("weight:"):], ref[key]
        m = re.match(r"(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$", name)
        if m:
            for e in range(array.shape[0]):
                if m.group(2) == "down_proj":
                    weights[f"{m.group(1)}.{e}.down_proj.weight"] = array[e]
                else:
                    gate, up = np.split(array[e], 2, axis=0)
                    weights[f"{m.group(1)}.{e}.gate_proj.weight"] = gate
                    weights[f"{m.group(1)}.{e}.up_proj.weight"] = up
        else:
            weights[name] = array
    return weights


def _converter(work: Path):
    """Import llama.cpp's converter (and its own gguf-py) from the source archive."""
    fetch_models.archive_path("llama-cpp-vocab")
    arc = fetch_models.ARCHIVES["llama-cpp-vocab"]
    archive = fetch_models.cache_dir() / f"{arc.dist}-{arc.version}" / f"{arc.dist}-{arc.version}.tar.gz"
    top = f"{arc.dist.replace('-', '_')}-{arc.version}/vendor/llama.cpp/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(top) and m.name[len(top):].split("/")[0] in
                   ("convert_hf_to_gguf.py", "conversion", "gguf-py")]
        tar.extractall(work, members=members, filter="data")
    src = work / top
    sys.path[:0] = [str(src / "gguf-py"), str(src)]
    if importlib.util.find_spec("sentencepiece") is None:  # imported before it looks for tokenizer.model
        import types

        sys.modules["sentencepiece"] = types.SimpleNamespace(SentencePieceProcessor=None)
    import convert_hf_to_gguf  # noqa: F401
    from conversion import base

    # our tokenizer's pre-tokenizer is GPT-2's; the converter recognises only hashes of known models
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    return sys.modules["convert_hf_to_gguf"], arc.version


def _tokenizer(folder: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.save(str(folder / "tokenizer.json"))
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                "{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "chat_template": template,
        "model_max_length": 128}, indent=2))
    return tok.get_vocab_size()


def _models(vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=2, pad_token_id=0)
    return {
        "llama": tf.LlamaForCausalLM(tf.LlamaConfig(**common, rope_theta=10000.0, tie_word_embeddings=True)),
        "qwen2": tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=False)),
        "qwen3": tf.Qwen3ForCausalLM(tf.Qwen3Config(**common, head_dim=16, rope_theta=1000000.0,
                                                    tie_word_embeddings=False)),
        "qwen3moe": tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(
            **common, head_dim=16, rope_theta=1000000.0, tie_word_embeddings=False, num_experts=4,
            num_experts_per_tok=2, moe_intermediate_size=24, norm_topk_prob=True, decoder_sparse_step=1,
            mlp_only_layers=[])),
    }


def _randomise(model, torch) -> None:
    # transformers initialises norms to 1 and biases to 0; random values test their mapping too
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))


def main() -> int:
    import torch
    import transformers

    torch.manual_seed(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        convert, llama_cpp_version = _converter(work / "src")
        versions["llama-cpp-python (convert_hf_to_gguf.py)"] = llama_cpp_version
        tok_dir = work / "tok"
        tok_dir.mkdir()
        vocab = _tokenizer(tok_dir)
        shutil.copy(tok_dir / "tokenizer.json", OUT / "tokenizer.json")
        shutil.copy(tok_dir / "tokenizer_config.json", OUT / "tokenizer_config.json")
        for family, model in _models(vocab).items():
            _randomise(model, torch)
            model = model.float().eval()
            hf_dir = work / family
            model.save_pretrained(hf_dir, safe_serialization=True)
            for f in tok_dir.iterdir():
                shutil.copy(f, hf_dir / f.name)
            out = OUT / f"{family}.gguf"
            sys.argv = ["convert_hf_to_gguf.py", str(hf_dir), "--outtype", "f32", "--outfile", str(out)]
            convert.main()
            arrays = {f"weight:{k}": v.detach().float().numpy() for k, v in model.state_dict().items()}
            with torch.no_grad():
                for i, ids in enumerate(IDS):
                    logits = model(torch.tensor([ids])).logits[0].float().numpy()
                    arrays[f"ids_{i}"] = np.array(ids, dtype=np.int32)
                    arrays[f"logits_{i}"] = logits
            np.savez_compressed(OUT / f"{family}.npz", **arrays)
            shutil.copy(hf_dir / "config.json", OUT / f"{family}.config.json")
            print(f"wrote {out} ({out.stat().st_size} bytes)")
    (OUT / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
