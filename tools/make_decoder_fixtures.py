"""Make tiny random-weight decoder fixtures and float32 reference outputs for the Llama and Qwen plugins.

Writes ``plugins/arch_llama/tests/fixtures/<name>/`` and ``plugins/arch_qwen/tests/fixtures/<name>/``,
one folder per fixture, each as a Hugging Face checkpoint a user could download:

  config.json, model.safetensors, generation_config.json (what save_pretrained writes)
  tokenizer.json       byte-level BPE trained here with the tokenizers library (vocab ≥ 300:
                       256 byte symbols, merges, and the special tokens <|endoftext|>,
                       <|im_start|>, <|im_end|>; Llama fixtures also <|begin_of_text|> as bos,
                       prepended by the post-processor as Llama 3's tokenizer does)
  tokenizer_config.json  bos_token (Llama fixtures only), eos_token "<|im_end|>", pad_token
                       "<|endoftext|>", model_max_length, and a ChatML chat_template (the Llama one
                       starts with {{ bos_token }})
  reference.npz        see below

reference.npz keys (prompts are the PROMPTS below, tokenized by the fixture's own tokenizer with
its special tokens, i.e. with bos for Llama fixtures):
  prompt_ids_<i>   int64 [L_i]
  logits_<i>       float32 [L_i, V]: transformers forward of the whole prompt, no cache, eager
                   attention, float32 (for the f16/bf16 fixtures: the float32 model run on the
                   rounded weights, loaded back from the f16/bf16 file)
  argmax_<i>       int64 [L_i]: logits_<i>.argmax(-1)
  greedy_<i>       int64 [16]: ``generate(do_sample=False, max_new_tokens=16)`` with no eos stop
  margin           float32: the smallest top-1/top-2 logit gap over every argmax above (the tool
                   refuses fixtures where it is below 1e-3, so 1e-4 errors cannot flip a token)
  chat_text        str: ``apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)``
  chat_ids         int64: the same, tokenized as transformers does (no added special tokens)

Fixtures:
  arch_llama: tiny-llama (GQA 4/2, tied head, config in the released-checkpoint layout with
    rope_theta at top level), tiny-llama-f16 / tiny-llama-bf16 (its weights rounded),
    tiny-llama-untied (MHA, untied head, attention_bias and mlp_bias), tiny-llama-llama3 (MQA 4/1,
    llama3 rope scaling), tiny-llama-yarn, tiny-llama-linear, tiny-llama-dynamic (max positions
    32, so prompts and continuations run past it).
  arch_qwen: tiny-qwen2 (QKV bias, tied), tiny-qwen2-f16 / -bf16, tiny-qwen2-window (untied,
    use_sliding_window from layer 1 with window 8), tiny-qwen3 (q/k norm, head_dim 24 ≠
    hidden/heads, untied), tiny-qwen3-yarn, tiny-qwen3-moe (8 experts top-2, norm_topk_prob true,
    decoder_sparse_step 1, mlp_only_layers [1]), tiny-qwen3-moe-nonorm (norm_topk_prob false,
    decoder_sparse_step 2), tiny-qwen3-moe-bf16.

Needs (tools only, never gllm itself): torch, transformers, tokenizers, safetensors.
Also writes ``tests/fixtures/rope_reference.json``: transformers' inverse frequencies and attention
factor for each RoPE type (default, linear, dynamic, yarn, longrope, llama3), for tests/test_rope.py.

Run from the repo root:  python tools/make_decoder_fixtures.py [llama|qwen|rope ...]
"""

from __future__ import annotations

import copy
import datetime
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = {"llama": ROOT / "plugins" / "arch_llama" / "tests" / "fixtures",
       "qwen": ROOT / "plugins" / "arch_qwen" / "tests" / "fixtures"}
SEED = 4321
NEW_TOKENS = 16
MIN_MARGIN = 1e-3
MIN_ROUTER_GAP = 1e-5

PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Héllo naïve café, 123 + 456 = 579: a prompt past thirty-two tokens.",
]
CHAT = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Again?"}]

CORPUS = """
The quick brown fox jumps over the lazy dog. A small model writes text one token at a time.
Hello, world! How are you today? I am fine, thank you. What is the answer to the question?
def add(a, b):
    return a + b
for i in range(10):
    print(i * i)
class Model:
    def forward(self, tokens, cache):
        return self.head(self.norm(tokens))
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 42
The cat sat on the mat. The dog ran to the house. Birds fly over the river and the sea.
Language models predict the next word from the words before it, and a cache keeps what was seen.
Héllo naïve café — ÜBER Straße. 你好，世界。こんにちは。 Привет, мир!
<|im_start|>user
What is the capital of France?<|im_end|>
<|im_start|>assistant
The capital of France is Paris.<|im_end|>
"""

CHATML = ("{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{%- endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_BOS = "<|begin_of_text|>"
VOCAB_SIZE = 320


def make_tokenizer(with_bos: bool):
    """A byte-level BPE tokenizer.json (as GPT-2, Llama 3 and Qwen use) trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIALS + ([LLAMA_BOS] if with_bos else [])
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 3, trainer)
    if with_bos:
        bos = tok.token_to_id(LLAMA_BOS)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{LLAMA_BOS} $A", pair=f"{LLAMA_BOS} $A {LLAMA_BOS} $B",
                                          special_tokens=[(LLAMA_BOS, bos)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.get_vocab_size() >= 300, tok.get_vocab_size()
    for text in PROMPTS + [CORPUS]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text, text
    return tok


def write_tokenizer(d: Path, tok, with_bos: bool, max_len: int) -> None:
    tok.save(str(d / "tokenizer.json"))
    chat_template = ("{{ bos_token }}" + CHATML) if with_bos else CHATML
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": LLAMA_BOS if with_bos else None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": with_bos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "chat_template": chat_template,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights with logits of a few units (HF's 0.02 init gives near-uniform logits) and norms,
    biases and q/k norms away from their trivial values so each is actually tested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name == "lm_head.weight":
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.ndim in (2, 3):  # [out, in], or [experts, out, in] (transformers' fused experts)
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            else:
                raise AssertionError(f"unhandled parameter {name}")


def to_released_layout(d: Path) -> None:
    """Rewrite config.json from transformers 5's layout to the one released checkpoints carry:
    ``rope_theta`` at top level and ``rope_scaling`` (null, or with the old "type" key for linear
    and dynamic) instead of ``rope_parameters``; Qwen3-MoE's ``num_experts`` instead of
    ``num_local_experts``."""
    cfg = json.loads((d / "config.json").read_text())
    if "num_local_experts" in cfg and cfg.get("model_type") == "qwen3_moe":
        cfg["num_experts"] = cfg.pop("num_local_experts")
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    kind = rope.pop("rope_type")
    if kind == "default":
        cfg["rope_scaling"] = None
    elif kind in ("linear", "dynamic"):
        cfg["rope_scaling"] = {"type": kind, **rope}
    else:
        cfg["rope_scaling"] = {"rope_type": kind, **rope}
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def margin(logits: torch.Tensor) -> float:
    top = torch.topk(logits.float(), 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


class RouterGaps:
    """The smallest gap between the k-th and (k+1)-th router probability seen (MoE fixtures)."""

    def __init__(self, model):
        self.gap = float("inf")
        self.handles = []
        for module in model.modules():
            if type(module).__name__.endswith("TopKRouter"):
                self.handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module, args, output):
        probs = torch.softmax(output[0].float(), dim=-1)
        top = torch.topk(probs, module.top_k + 1, dim=-1).values
        self.gap = min(self.gap, float((top[:, -2] - top[:, -1]).min()))

    def close(self):
        for h in self.handles:
            h.remove()


def load(cls, d: Path):
    m = cls.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager")
    m.generation_config.eos_token_id = None  # generate exactly NEW_TOKENS tokens
    m.generation_config.pad_token_id = 0
    return m.eval()


@torch.no_grad()
def references(cls, d: Path, hf_tok) -> dict:
    ref: dict = {}
    margins = []
    model = load(cls, d)
    gaps = RouterGaps(model)
    for i, text in enumerate(PROMPTS):
        ids = hf_tok(text)["input_ids"]
        x = torch.tensor([ids])
        # a fresh model for each prompt: dynamic NTK keeps state between calls in transformers
        model = load(cls, d)
        gaps.close()
        gaps = RouterGaps(model)
        logits = model(x).logits[0]
        out = model.generate(x, do_sample=False, max_new_tokens=NEW_TOKENS, output_logits=True,
                             return_dict_in_generate=True)
        greedy = out.sequences[0, len(ids):]
        assert len(greedy) == NEW_TOKENS
        margins += [margin(logits), min(margin(s[0]) for s in out.logits)]
        ref[f"prompt_ids_{i}"] = np.asarray(ids, dtype=np.int64)
        ref[f"logits_{i}"] = logits.numpy().astype(np.float32)
        ref[f"argmax_{i}"] = logits.argmax(-1).numpy().astype(np.int64)
        ref[f"greedy_{i}"] = greedy.numpy().astype(np.int64)
    gaps.close()
    ref["margin"] = np.float32(min(margins))
    if gaps.handles or gaps.gap != float("inf"):
        ref["router_gap"] = np.float32(gaps.gap)
    chat_text = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ref["chat_text"] = np.asarray(chat_text)
    ref["chat_ids"] = np.asarray(hf_tok(chat_text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    return ref


def build(spec: dict, tok, gen: torch.Generator):
    cls, config = spec["cls"], spec["config"]
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    model = cls(config)
    perturb_(model, gen)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def write_fixture(out: Path, name: str, model, cls, tok, with_bos: bool, legacy: bool, dtype=None) -> None:
    from transformers import PreTrainedTokenizerFast

    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    m = copy.deepcopy(model)
    if dtype is not None:
        m = m.to(dtype)
    m.save_pretrained(str(d), safe_serialization=True)
    if legacy:
        to_released_layout(d)
    write_tokenizer(d, tok, with_bos, model.config.max_position_embeddings)
    hf_tok = PreTrainedTokenizerFast.from_pretrained(str(d))
    ref = references(cls, d, hf_tok)
    if ref["margin"] < MIN_MARGIN or ref.get("router_gap", 1.0) < MIN_ROUTER_GAP:
        print(f"{name}: top-2 logit margin {ref['margin']:.2e}, router gap {ref.get('router_gap', 1.0):.2e}: "
              "too close to a tie, drawing other weights")
        return False
    np.savez(d / "reference.npz", **ref)
    lengths = [len(ref[f"prompt_ids_{i}"]) for i in range(len(PROMPTS))]
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"{name}: prompts {lengths}, margin {float(ref['margin']):.3f}, "
          f"logit std {float(ref['logits_1'].std()):.2f}, {size / 1024:.0f} KiB")
    return True


def llama_specs():
    from transformers import LlamaConfig, LlamaForCausalLM

    def cfg(**kw):
        base = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                    tie_word_embeddings=True, hidden_act="silu")
        base.update(kw)
        return LlamaConfig(**base)

    return LlamaForCausalLM, [
        dict(name="tiny-llama", config=cfg(), legacy=True, variants=("f16", "bf16")),
        dict(name="tiny-llama-untied", config=cfg(num_key_value_heads=4, tie_word_embeddings=False,
                                                  attention_bias=True, mlp_bias=True)),
        dict(name="tiny-llama-llama3", legacy=True, config=cfg(
            num_key_value_heads=1, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16})),
        dict(name="tiny-llama-yarn", config=cfg(
            rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})),
        dict(name="tiny-llama-linear", legacy=True, config=cfg(rope_scaling={"rope_type": "linear", "factor": 2.0})),
        dict(name="tiny-llama-dynamic", legacy=True, config=cfg(
            max_position_embeddings=32, rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
    ]


def qwen_specs():
    from transformers import (Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig,
                              Qwen3MoeForCausalLM)

    common = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  hidden_act="silu")

    def q2(**kw):
        return Qwen2Config(**{**common, "tie_word_embeddings": True, **kw})

    def q3(**kw):
        return Qwen3Config(**{**common, "head_dim": 24, "tie_word_embeddings": False, **kw})

    def moe(**kw):
        base = {**common, "num_hidden_layers": 3, "head_dim": 16, "tie_word_embeddings": False, "num_experts": 8,
                "num_experts_per_tok": 2, "moe_intermediate_size": 16}
        return Qwen3MoeConfig(**{**base, **kw})

    return [
        (Qwen2ForCausalLM, dict(name="tiny-qwen2", config=q2(), legacy=True, variants=("f16", "bf16"))),
        (Qwen2ForCausalLM, dict(name="tiny-qwen2-window", config=q2(
            tie_word_embeddings=False, use_sliding_window=True, sliding_window=8, max_window_layers=1))),
        (Qwen3ForCausalLM, dict(name="tiny-qwen3", config=q3(), legacy=True)),
        (Qwen3ForCausalLM, dict(name="tiny-qwen3-yarn", config=q3(
            tie_word_embeddings=True,
            rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}))),
        (Qwen3MoeForCausalLM, dict(name="tiny-qwen3-moe", legacy=True, variants=("bf16",), config=moe(
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1]))),
        (Qwen3MoeForCausalLM, dict(name="tiny-qwen3-moe-nonorm", config=moe(
            norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[]))),
    ]


def make_family(family: str, gen: torch.Generator) -> None:
    out = OUT[family]
    out.mkdir(parents=True, exist_ok=True)
    with_bos = family == "llama"
    tok = make_tokenizer(with_bos)
    if family == "llama":
        cls, specs = llama_specs()
        specs = [(cls, s) for s in specs]
    else:
        specs = qwen_specs()
    for cls, spec in specs:
        cfg = spec["config"]
        cfg.vocab_size = tok.get_vocab_size()
        cfg.bos_token_id = tok.token_to_id(LLAMA_BOS) if with_bos else None
        cfg.eos_token_id = tok.token_to_id("<|im_end|>")
        cfg.pad_token_id = tok.token_to_id("<|endoftext|>")
        for _attempt in range(20):  # the base and its f16/bf16 variants share one draw of weights
            model = build({"cls": cls, "config": cfg}, tok, gen)
            legacy = spec.get("legacy", False)
            ok = write_fixture(out, spec["name"], model, cls, tok, with_bos, legacy)
            for variant in spec.get("variants", ()) if ok else ():
                dtype = {"f16": torch.float16, "bf16": torch.bfloat16}[variant]
                ok = ok and write_fixture(out, f"{spec['name']}-{variant}", model, cls, tok, with_bos, legacy, dtype)
            if ok:
                break
        else:
            raise SystemExit(f"{spec['name']}: no draw of weights without near-ties")
    import tokenizers
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0], "date": datetime.date.today().isoformat(), "seed": SEED}
    (out / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out.relative_to(ROOT)} ({total / 1024:.0f} KiB)")


ROPE_OUT = ROOT / "tests" / "fixtures" / "rope_reference.json"


def make_rope_reference() -> None:
    """inv_freq and attention factor of every RoPE type, from transformers, for tests/test_rope.py:
    each case is a config.json (transformers' own layout, so both layouts are covered by the
    fixtures above and this) and the sequence lengths the length-dependent types are asked at."""
    from transformers import LlamaConfig, Phi3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    base = dict(hidden_size=64, num_attention_heads=4, max_position_embeddings=128)
    cases = [
        (LlamaConfig, dict(rope_theta=10000.0)),
        (LlamaConfig, dict(rope_theta=500000.0, head_dim=64, hidden_size=256)),
        (LlamaConfig, dict(rope_scaling={"rope_type": "linear", "factor": 2.5})),
        (LlamaConfig, dict(rope_scaling={"rope_type": "linear", "factor": 2.0}, partial_rotary_factor=0.5)),
        (LlamaConfig, dict(rope_scaling={"rope_type": "dynamic", "factor": 3.0})),
        (LlamaConfig, dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})),
        (LlamaConfig, dict(rope_scaling={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
                                         "beta_fast": 8, "beta_slow": 2, "mscale": 0.707, "mscale_all_dim": 1.0,
                                         "truncate": False})),
        (LlamaConfig, dict(rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
                                         "attention_factor": 0.9})),
        (LlamaConfig, dict(rope_theta=500000.0, head_dim=64, hidden_size=256, max_position_embeddings=131072,
                           rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
        (Phi3Config, dict(original_max_position_embeddings=64, max_position_embeddings=256,
                          rope_scaling={"type": "longrope", "long_factor": [1.0 + i * 0.3 for i in range(8)],
                                        "short_factor": [1.0 + i * 0.05 for i in range(8)]})),
    ]
    out = []
    for cls, kwargs in cases:
        config = cls(**{**base, **kwargs})
        kind = config.rope_parameters["rope_type"]
        results = []
        for seq_len in (None, 100, 200, 300):
            if kind == "default":
                inv_freq, factor = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
            else:
                inv_freq, factor = ROPE_INIT_FUNCTIONS[kind](config, None, seq_len=seq_len)
            results.append({"seq_len": seq_len, "inv_freq": [float(x) for x in inv_freq.float().numpy()],
                            "attention_factor": float(factor)})
        out.append({"config": config.to_dict(), "results": results})
    ROPE_OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {ROPE_OUT.relative_to(ROOT)} ({len(out)} cases)")


def main(argv: list[str]) -> int:
    families = argv or ["llama", "qwen", "rope"]
    if "rope" in families:
        families = [f for f in families if f != "rope"]
        make_rope_reference()
    torch.use_deterministic_algorithms(True)
    for family in families:
        if family not in OUT:
            raise SystemExit(f"unknown family {family!r} (llama, qwen)")
        gen = torch.Generator().manual_seed(SEED + (0 if family == "llama" else 1))
        make_family(family, gen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
