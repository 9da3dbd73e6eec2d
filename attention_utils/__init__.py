"""Tools that load the training scripts' checkpoints and run folders: evaluation, attention overlays,
saliency metrics, Atari-HEAD, result tables and plots. One module per job; each runs with
`python -m attention_utils.<module> --help`."""
