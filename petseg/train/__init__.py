"""Training: the engine (device, AMP, train and evaluation loops), frozen-backbone features (cached once per
backbone or live), fine-tuning a head (fit), inference on photos and prediction timing. No Ray here."""
