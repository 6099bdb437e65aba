"""The ECG-JEPA model: encoder, predictor, JEPA wrapper, masks, position table, checkpoints."""
