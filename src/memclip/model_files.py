"""The files of a model folder, as :func:`memclip.save_pretrained` writes it and the Hugging Face Hub holds it.

- ``memclip_config.json``: the memclip config (open_clip's plus the memory block), the preprocessing and the version
  and commit of memclip that saved it;
- ``open_clip_model.safetensors``: the weights (with the config in the metadata);
- ``open_clip_config.json``: open_clip's config, for models open_clip can build on its own (no memory);
- ``README.md``: the model card (:mod:`memclip.model_card`), in folders written for the Hub.
"""
SAVED_CONFIG_NAME = "memclip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
MODEL_CARD_NAME = "README.md"

OPEN_CLIP_WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                           "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
"""Weights files of an open_clip Hub repo, in open_clip's order of preference."""
