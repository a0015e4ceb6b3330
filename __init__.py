"""qcompile: a declarative compiler for memory-bounded LoRA fine-tuning."""

__version__ = "0.1.0"
