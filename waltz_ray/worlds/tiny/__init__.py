"""The embedded world: a locally trained tokenizer, tiny Llama agents and their supervised warm start."""
