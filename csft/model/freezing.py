"""Freezing policies: which parts of a BERT-family encoder train, and which stay fixed."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from csft.errors import ConfigError


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers (BERT: encoder.layer; DistilBERT: transformer.layer)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module = encoder
        for name in path.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ConfigError(f"cannot find the layer stack of {type(encoder).__name__} to freeze.")


@dataclass(frozen=True)
class FreezePolicy:
    """`trainable_layers`: how many of the top encoder layers train (None = all, 0 = none,
    a linear probe). `train_embeddings`: whether the embeddings train. The head always trains.
    """

    name: str = "none"
    trainable_layers: int | None = None
    train_embeddings: bool = True

    def apply(self, encoder: nn.Module) -> list[nn.Module]:
        """Set requires_grad on the encoder; return the frozen modules (to keep in eval mode)."""
        layers = encoder_layers(encoder)
        depth = len(layers)
        top = depth if self.trainable_layers is None else self.trainable_layers
        if not 0 <= top <= depth:
            raise ConfigError(
                f"freeze={self.name}: freeze.trainable_layers={self.trainable_layers} asks for "
                f"{top} trainable layers, but the encoder has {depth} layers."
            )
        frozen: list[nn.Module] = []
        embeddings = getattr(encoder, "embeddings", None)
        if embeddings is not None and not self.train_embeddings:
            frozen.append(embeddings)
        frozen.extend(layers[: depth - top])
        if top == 0:  # linear probe: nothing below the head trains
            frozen.append(encoder)
        for module in frozen:
            module.requires_grad_(False)
        return frozen


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
