"""Using a trained model: `foundry chat` (an interactive terminal loop) and `foundry serve` (an OpenAI-compatible
HTTP server), both on a transformers model with its KV cache, loaded from an export or a run folder."""
