"""Tiny real models and tokenizers for tests, shared by every test file (`from tiny import ...`;
conftest.py exposes the tokenizer as fixtures)."""


def tiny_llama(vocab_size, *, seed=0, tied=False, hidden=32, layers=2, intermediate=64, **config):
    """A tiny random Llama (2 layers, width 32 by default, in training mode as `from_config` gives
    it) for tests: cheap, real transformers code paths. `config` goes to `LlamaConfig` (e.g. max_position_embeddings, eos_token_id)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=intermediate, tie_word_embeddings=tied, **config)
    return LlamaForCausalLM(cfg)


def make_tiny_tokenizer():
    """A real byte-level BPE tokenizer with a ~400-token vocabulary, trained in memory: cheap to
    copy and to pair with tiny random models (every unicode string is encodable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["Get the current weather in a city", "Send an e-mail to someone", "time zone", "search the web",
              '{"city": "Paris", "n": 3, "ok": true}', "call the tool with arguments", "hello world"] * 5
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
