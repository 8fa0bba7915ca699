"""The slot probe (``python -m memclip_train.study capacity``): does a product-key memory give the vision tower
capacity that an MLP at the same FLOPs lacks?

K visible identities get random names; only the MLP slot of the frozen teacher's last block trains, as the MLP, the
project's memory, larger memories and MLPs widened to each memory's parameters; each stores what it can, measured in
bits on held-out renders. Gated and pre-registered: see docs/capacity.md.
"""
