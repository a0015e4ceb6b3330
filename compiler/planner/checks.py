"""What the architecture says about the spec: lora.layers indices beyond the model's layer count (path
("lora", "layers", i)) and target modules the architecture lacks (path ("lora", "target_modules", i)).
"""

from __future__ import annotations

from qcompile.compiler.diagnostics import Diagnostic, error

from .architecture import Architecture


def architecture_diagnostics(spec, arch: Architecture) -> list[Diagnostic]:
    out = []
    for index, layer in enumerate(spec.lora.layers or []):
        if not 0 <= layer < arch.num_layers:
            out.append(error(
                ("lora", "layers", index),
                f"layer {layer} does not exist: the model has {arch.num_layers} layers (0..{arch.num_layers - 1})",
                "layer_out_of_range",
            ))
    modules = list(arch.linear_modules())
    targets = spec.lora.target_modules
    for index, name in enumerate(targets if isinstance(targets, list) else []):  # all-linear: every one
        if name not in modules:
            import difflib  # only for a misspelt name

            close = difflib.get_close_matches(name, modules, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"this architecture has {', '.join(modules)}"
            out.append(error(
                ("lora", "target_modules", index),
                f"the {arch.model_type} architecture has no module {name!r} to adapt",
                "unknown_target_module",
                hint,
            ))
    return out
