#!/usr/bin/env python3
"""Renders the chat-template goldens of tests/data/chat/ with transformers' apply_chat_template.

Dev-time only (PyPI: transformers, tokenizers, jinja2). Run from the repository root:

    /work/venv/bin/python tools/make_chat_goldens.py

tests/data/chat/templates.json: {name: {"template", "bos_token", "eos_token", "family"}}, the
Jinja templates as the checkpoints named ship them in tokenizer_config.json (SmolLM2's as its
GGUF carries it); family is what lowbit must recognise it as ("unknown": must be refused).
tests/data/chat/golden.json: [{"template", "messages", "add_generation_prompt", "text"} or
{..., "error": true}] where text is apply_chat_template(messages, tokenize=False,
add_generation_prompt=...) and error means transformers raised (a template's raise_exception).
"""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "chat")

CHATML_LOOP = ("{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

TEMPLATES = {
    "smollm2": {
        "family": "ChatML", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
                    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n' }}{% endif %}" + CHATML_LOOP},
    "qwen2": {
        "family": "ChatML", "bos_token": None, "eos_token": "<|im_end|>",
        "template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
                    "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}" + CHATML_LOOP},
    "qwen1.5": {
        "family": "ChatML", "bos_token": None, "eos_token": "<|endoftext|>",
        "template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
                    "'<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}" + CHATML_LOOP},
    "chatml-openorca": {
        "family": "ChatML", "bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>",
        "template": "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
                    "{% for message in messages %}" + CHATML_LOOP},
    "internlm2": {
        "family": "ChatML", "bos_token": "<s>", "eos_token": "</s>",
        "template": "{{ bos_token }}{% for message in messages %}" + CHATML_LOOP},
    "llama2": {
        "family": "Llama-2", "bos_token": "<s>", "eos_token": "</s>",
        "template": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
                    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
                    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == "
                    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
                    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
                    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
                    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
                    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
                    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
                    "endfor %}"},
    "llama3": {
        "family": "Llama-3", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "template": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
                    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ "
                    "content }}{% endfor %}{% if add_generation_prompt %}{{ "
                    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"},
    "falcon": {
        "family": "Falcon", "bos_token": ">>", "eos_token": "<|endoftext|>",
        "template": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ 'User: \n' + "
                    "message['content'] }}\n{% elif message['role'] == 'system' %}\n{{ 'System: ' + message['content'] "
                    "}}\n{% elif message['role'] == 'assistant' %}\n{{ 'Falcon:\n'  + message['content']}}\n{% endif "
                    "%}\n{% if loop.last and add_generation_prompt %}\n{{ 'Falcon:' }}\n{% endif %}\n{% endfor %}"},
    "zephyr": {
        "family": "Zephyr", "bos_token": "<s>", "eos_token": "</s>",
        "template": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
                    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + "
                    "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
                    "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
                    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}\n"},
    "mistral": {
        "family": "Mistral", "bos_token": "<s>", "eos_token": "</s>",
        "template": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 "
                    "== 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') "
                    "}}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% "
                    "elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
                    "raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"},
    "tulu-unknown": {
        "family": "unknown", "bos_token": "<s>", "eos_token": "</s>",
        "template": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
                    "message['content'] }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + "
                    "message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ "
                    "'<|assistant|>' }}\n{% endif %}\n{% endfor %}"},
}

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "  Hi there!  \n"}, {"role": "assistant", "content": " Hello! How can I help?\n\n"},
     {"role": "user", "content": "Write a haiku about\tthe sea.\u3000"}],
    [{"role": "system", "content": "Answer in French.\n"}, {"role": "user", "content": "2 + 2?"},
     {"role": "assistant", "content": "Quatre."}, {"role": "user", "content": "Et 3 + 3 ?"}],
    [{"role": "user", "content": "Unicode: caf\u00e9 \u65e5\u672c <b>tags</b> 'quotes' \"double\" \\backslash"}],
    [{"role": "user", "content": ""}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Odd order."}],
    [{"role": "user", "content": "One."}, {"role": "user", "content": "Two users in a row."}],
]


def main():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "templates.json"), "w", encoding="utf-8") as f:
        json.dump(TEMPLATES, f, ensure_ascii=False, indent=1)
    cases = []
    for name, spec in TEMPLATES.items():
        if spec["family"] == "unknown":
            continue
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                      bos_token=spec["bos_token"], eos_token=spec["eos_token"])
        tok.chat_template = spec["template"]
        for messages in CONVERSATIONS:
            for gen in (True, False):
                case = {"template": name, "messages": messages, "add_generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
                except Exception as e:  # the template's raise_exception
                    case["error"] = True
                    case["message"] = str(e)
                cases.append(case)
    with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"{len(cases)} renderings of {len(TEMPLATES)} templates")


if __name__ == "__main__":
    main()
