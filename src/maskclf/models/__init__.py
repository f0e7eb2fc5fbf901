"""Models: timm backbones with the competition's heads, sized by a spec; the losses they
train with; weights read safely; checkpoints that describe themselves."""
