"""toolken inside serving engines other than transformers' `generate`.

- `toolken.integrations.openai_calls`: OpenAI ``tools``/``tool_choice`` -> toolken's decoding
  rules, and generated text -> OpenAI tool calls (no engine needed).
- `toolken.integrations.vllm`: vLLM's OpenAI server with toolken's tool parser and logits
  processor (needs ``pip install 'toolken[vllm]'``; imported only when asked for).
- `toolken.integrations.serve`: the server command line with those plug-ins (no vLLM import).
"""
