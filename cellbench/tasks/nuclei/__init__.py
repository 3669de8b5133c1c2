"""The nuclei task: a HoVer-Net-style decoder on frozen-backbone tokens (token dataset, decoder,
losses, post-processing and its tuning, pipeline, evaluation, predictor, export/)."""
