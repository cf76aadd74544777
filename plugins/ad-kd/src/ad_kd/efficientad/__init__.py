"""EfficientAD: networks, model, its own trainer, penalty images and the offline teacher distillation."""
