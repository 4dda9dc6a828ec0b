"""The imageInference contract: request and response models, rules, errors, AIRs. Pure Python, no torch."""
