// Chat templates, rendered natively (Debian packages no C++ Jinja engine). A model's Jinja
// template (tokenizer_config.json "chat_template") is recognised as one of the families real
// checkpoints use by comparing it, in a normal form that keeps exactly what Jinja would render
// (whitespace inside tags dropped, string literals unescaped, transformers' trim_blocks and
// lstrip_blocks applied), with the known templates of each family; the family's renderer then
// produces what transformers' apply_chat_template(messages, tokenize=False,
// add_generation_prompt=...) produces (tests/data/chat goldens).
//
// Families: ChatML (SmolLM2, Qwen1.5/Qwen2, OpenOrca, InternLM2, Nous-Hermes: <|im_start|>role\n
// content<|im_end|>\n, optionally with a default system message or a leading BOS), Llama-2
// ([INST] with <<SYS>>), Llama-3 (header ids, <|eot_id|>), Falcon-instruct (User:/Falcon:),
// Zephyr (<|user|>\n...eos), Mistral-instruct v0.1 ([INST] without a system turn).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lowbit {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (others render as their family's template does)
  std::string content;
};

enum class ChatFamily { ChatML, Llama2, Llama3, Falcon, Zephyr, Mistral };
const char* chat_family_name(ChatFamily f);

class ChatTemplate {
 public:
  // Recognises `template_text`; InputError naming `source` and saying how to run without --chat
  // when the template is not one lowbit knows.
  static ChatTemplate recognise(const std::string& template_text, const std::string& source);
  // The template of a model folder: tokenizer_config.json "chat_template" (a string, or a list
  // of {"name", "template"} where "default" is used), else chat_template.jinja; bos_token and
  // eos_token from tokenizer_config.json. InputError when the folder has no template.
  static ChatTemplate from_model_dir(const std::string& dir);

  ChatFamily family() const { return family_; }
  // transformers' apply_chat_template(messages, tokenize=False, add_generation_prompt=...).
  // InputError where the Jinja template raises (e.g. Llama-2/Mistral roles not alternating).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  void set_special_tokens(std::string bos, std::string eos) {
    bos_token_ = std::move(bos);
    eos_token_ = std::move(eos);
  }
  // The default system message the template inserts when the conversation has none (ChatML
  // variants such as SmolLM2's and Qwen's); empty when it inserts none.
  const std::string& default_system() const { return default_system_; }

 private:
  ChatFamily family_ = ChatFamily::ChatML;
  std::string default_system_;  // ChatML: inserted before the first message unless it is a system turn
  bool leading_bos_ = false;    // ChatML: the template starts with {{ bos_token }}
  std::string mistral_eos_suffix_;  // Mistral: text after eos_token in an assistant turn (" " in one variant)
  bool llama3_always_prompt_ = false;  // Llama-3 variant that always appends the assistant header
  std::string bos_token_, eos_token_;
};

// A JSONL record's "messages": a non-empty array of {"role": string, "content": string}.
// InputError naming `where` otherwise.
std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& value, const std::string& where);

// The normal form used for recognition (exposed for tests): what Jinja would treat the same
// renders the same here.
std::string normalize_jinja_template(const std::string& text);

// Python's str.strip() / Jinja's trim: removes leading and trailing Unicode whitespace.
std::string python_strip(const std::string& s);

}  // namespace lowbit
