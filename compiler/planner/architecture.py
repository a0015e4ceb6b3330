"""A decoder-only transformer's shape, read from a config.json dict: enough to count bytes without weights.

Covers the Llama family layout that Qwen1.5/Qwen2/Qwen2.5, Llama 2/3 and Mistral share (RMSNorm,
q/k/v/o attention with grouped KV heads, gated MLP). Parameter counts follow the transformers modules
exactly (biases, tied head); a test checks them against models built on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass

from qcompile.errors import QcompileError

# model_type -> (bias on q/k/v, bias on o_proj): what transformers' modeling code builds by default.
SUPPORTED_MODEL_TYPES = ("qwen2", "llama", "mistral")

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class ArchitectureUnknown(QcompileError):
    """No config.json or catalog entry describes the model; `hint` says what to pass."""


class ArchitectureInvalid(ArchitectureUnknown):
    """A config.json whose numbers describe no real model (zero sizes, heads that do not divide the
    hidden size, absurd layer counts): a mistake in the user's file, reported with its key."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}", "fix the config.json, or point model.config at the model's own")


# Plausible upper bounds: the largest released models are far below each (and the planner's loops
# run over layers and devices, so an absurd count must stop here, not hang).
LIMITS = {
    "num_hidden_layers": 1024,
    "hidden_size": 2**20,
    "intermediate_size": 2**22,
    "num_attention_heads": 2**14,
    "num_key_value_heads": 2**14,
    "head_dim": 2**14,
    "vocab_size": 2**24,
}


def _count(config: dict, key: str, source: str, required: bool = True) -> int | None:
    """config[key] as a positive integer within LIMITS; ArchitectureInvalid otherwise."""
    if key not in config or config[key] is None:
        if required:
            raise ArchitectureInvalid(source, key, "missing; the planner needs it")
        return None
    value = config[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchitectureInvalid(source, key, f"must be a whole number, not {type(value).__name__}")
    if not 1 <= value <= LIMITS[key]:
        raise ArchitectureInvalid(source, key, f"is {value}; must be between 1 and {LIMITS[key]}")
    return value


def _shape(config: dict, source: str) -> dict[str, int]:
    """The sizes of a config.json, checked for a model that can exist."""
    shape = {key: _count(config, key, source, key not in ("num_key_value_heads", "head_dim")) for key in LIMITS}
    hidden, heads = shape["hidden_size"], shape["num_attention_heads"]
    if shape["head_dim"] is None:
        if hidden % heads:
            raise ArchitectureInvalid(source, "num_attention_heads",
                                      f"{heads} heads do not divide hidden_size {hidden}")
        shape["head_dim"] = hidden // heads
    kv = shape["num_key_value_heads"] or heads
    if kv > heads or heads % kv:
        raise ArchitectureInvalid(source, "num_key_value_heads",
                                  f"{kv} key/value heads do not divide num_attention_heads {heads}")
    shape["num_key_value_heads"] = kv
    return shape


@dataclass(frozen=True)
class Architecture:
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    checkpoint_dtype: str | None  # the dtype the weights are stored in, when the config says
    source: str  # where the numbers came from (a file path or the catalog's citation)

    @classmethod
    def from_config(cls, config: dict, source: str) -> Architecture:
        """Read a transformers config.json dict; raise ArchitectureUnknown for layouts not modelled and
        ArchitectureInvalid for sizes no model can have."""
        model_type = config.get("model_type")
        if not isinstance(model_type, str) or model_type not in SUPPORTED_MODEL_TYPES:
            raise ArchitectureUnknown(
                f"model_type {repr(model_type)[:60]} in {source} is not one the planner models",
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}; plan with --no-memory-check otherwise",
            )
        shape = _shape(config, source)
        attention_bias = bool(config.get("attention_bias", False))
        dtype = config.get("torch_dtype") or config.get("dtype")
        return cls(
            model_type=model_type,
            num_layers=shape["num_hidden_layers"],
            hidden_size=shape["hidden_size"],
            intermediate_size=shape["intermediate_size"],
            num_heads=shape["num_attention_heads"],
            num_kv_heads=shape["num_key_value_heads"],
            head_dim=shape["head_dim"],
            vocab_size=shape["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,
            mlp_bias=bool(config.get("mlp_bias", False)),
            checkpoint_dtype=dtype if isinstance(dtype, str) and dtype in DTYPE_BYTES else None,
            source=source,
        )

    # --- shapes -------------------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """The Linear modules of one decoder layer, name -> (in_features, out_features)."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def has_bias(self, module: str) -> bool:
        if module in ("q_proj", "k_proj", "v_proj"):
            return self.qkv_bias
        if module == "o_proj":
            return self.o_bias
        return self.mlp_bias

    # --- parameter counts ---------------------------------------------------------------------------
    def layer_params(self) -> int:
        linear = sum(
            fan_in * fan_out + (fan_out if self.has_bias(name) else 0)
            for name, (fan_in, fan_out) in self.linear_modules().items()
        )
        return linear + 2 * self.hidden_size  # two RMSNorm weights

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def head_params(self) -> int:
        """Final norm plus lm_head (zero extra when the head is tied to the embedding)."""
        return self.hidden_size + (0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size)

    def num_params(self) -> int:
        """Exactly what transformers counts (tied weights once)."""
        return self.embedding_params() + self.num_layers * self.layer_params() + self.head_params()

    def lora_params(self, r: int, target_modules: list[str], layers: list[int] | None) -> int:
        """Trainable parameters peft adds: A (r x in) and B (out x r) per targeted module and layer."""
        per_layer = sum(
            r * (fan_in + fan_out)
            for name, (fan_in, fan_out) in self.linear_modules().items()
            if name in target_modules
        )
        return per_layer * len(self.lora_layers(layers))

    def lora_layers(self, layers: list[int] | None) -> list[int]:
        if layers is None:
            return list(range(self.num_layers))
        return sorted({i for i in layers if 0 <= i < self.num_layers})

    def as_config(self) -> dict:
        """A config.json dict transformers can build this architecture from."""
        arch_class = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
        config = {
            "model_type": self.model_type,
            "architectures": [arch_class[self.model_type]],
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        if self.model_type == "llama":
            config["attention_bias"] = self.o_bias
            config["mlp_bias"] = self.mlp_bias
        return config
