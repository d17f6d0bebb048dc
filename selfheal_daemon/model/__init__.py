"""What a model is and how one is made: features, the registry, data quality, drift statistics,
training, the gate and its model tests, label repair, the training pipeline and the retrain job.
"""
