#include "chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace lowbit {

namespace {

namespace fs = std::filesystem;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// A Jinja string literal's value (the text between the quotes), escapes decoded as Jinja does
// for the common ones; an unknown escape keeps its backslash.
std::string unescape_literal(const std::string& body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    const char e = body[++i];
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      default: out += '\\'; out += e; break;
    }
  }
  return out;
}

// Canonical spelling of a string value inside a normalized tag: single quotes, only the quote and
// backslash escaped, everything else raw.
std::string canonical_literal(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// Normalizes the inside of a tag: whitespace outside string literals dropped, literals in
// canonical spelling. `end` is set to the index just past the closing delimiter.
std::string normalize_tag_body(const std::string& text, size_t begin, const std::string& closer, size_t& end,
                               bool& trim_after) {
  std::string out;
  size_t i = begin;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\'' || c == '"') {
      size_t j = i + 1;
      std::string body;
      while (j < text.size() && text[j] != c) {
        if (text[j] == '\\' && j + 1 < text.size()) body += text[j++];
        body += text[j++];
      }
      out += canonical_literal(unescape_literal(body));
      i = j + 1;
      continue;
    }
    if (text.compare(i, closer.size(), closer) == 0 || (c == '-' && text.compare(i + 1, closer.size(), closer) == 0)) {
      trim_after = c == '-';
      end = i + closer.size() + (c == '-' ? 1 : 0);
      return out;
    }
    if (!is_space(c)) out += c;
    ++i;
  }
  end = text.size();  // unterminated tag: Jinja would fail to parse; it can match no known template
  trim_after = false;
  return out + "<unterminated>";
}

}  // namespace

std::string normalize_jinja_template(const std::string& text) {
  std::string out;
  std::string pending;  // literal text not yet emitted (whitespace control may still trim it)
  bool strip_next_leading = false;  // the previous tag ended with '-'
  bool trim_next_newline = false;   // the previous tag was a block tag (trim_blocks)
  size_t i = 0;
  auto take_text = [&](size_t from, size_t to) {
    std::string t = text.substr(from, to - from);
    if (trim_next_newline && !t.empty() && t[0] == '\n') t.erase(0, 1);
    if (strip_next_leading) {
      size_t k = 0;
      while (k < t.size() && is_space(t[k])) ++k;
      t.erase(0, k);
    }
    if (!t.empty()) {
      trim_next_newline = false;
      strip_next_leading = false;
    }
    pending += t;
  };
  while (i < text.size()) {
    const size_t open = text.find('{', i);
    if (open == std::string::npos || open + 1 >= text.size()) {
      take_text(i, text.size());
      break;
    }
    const char kind = text[open + 1];
    if (kind != '{' && kind != '%' && kind != '#') {
      take_text(i, open + 1);
      i = open + 1;
      continue;
    }
    take_text(i, open);
    trim_next_newline = false;
    strip_next_leading = false;
    size_t body = open + 2;
    const bool strip_before = body < text.size() && text[body] == '-';
    if (body < text.size() && (text[body] == '-' || text[body] == '+')) ++body;
    const bool block_like = kind != '{';
    if (strip_before) {
      while (!pending.empty() && is_space(pending.back())) pending.pop_back();
    } else if (block_like && !(open + 2 < text.size() && text[open + 2] == '+')) {
      // lstrip_blocks: spaces and tabs between the line start (in the source) and a block tag
      // are dropped.
      size_t k = open;
      while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
      if (k == 0 || text[k - 1] == '\n')
        for (size_t n = open - k; n > 0 && !pending.empty() && (pending.back() == ' ' || pending.back() == '\t'); --n)
          pending.pop_back();
    }
    size_t end = 0;
    bool trim_after = false;
    if (kind == '#') {
      const size_t close = text.find("#}", body);
      end = close == std::string::npos ? text.size() : close + 2;
      trim_after = close != std::string::npos && close > body && text[close - 1] == '-';
      out += pending;
      pending.clear();
    } else {
      const std::string closer = kind == '{' ? "}}" : "%}";
      const std::string inner = normalize_tag_body(text, body, closer, end, trim_after);
      out += pending;
      pending.clear();
      out += kind == '{' ? "{{" + inner + "}}" : "{%" + inner + "%}";
    }
    strip_next_leading = trim_after;
    trim_next_newline = block_like;
    i = end;
  }
  return out + pending;
}

std::string python_strip(const std::string& s) {
  // UTF-8 encodings of the code points Python's str.isspace() accepts.
  static const char* const kSpaces[] = {" ", "\t", "\n", "\v", "\f", "\r", "\x1c", "\x1d", "\x1e", "\x1f",
                                        "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81",
                                        "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86",
                                        "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8",
                                        "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
  size_t begin = 0, end = s.size();
  for (bool changed = true; changed && begin < end;) {
    changed = false;
    for (const char* sp : kSpaces) {
      const size_t n = std::char_traits<char>::length(sp);
      if (end - begin >= n && s.compare(begin, n, sp) == 0) {
        begin += n;
        changed = true;
        break;
      }
    }
  }
  for (bool changed = true; changed && begin < end;) {
    changed = false;
    for (const char* sp : kSpaces) {
      const size_t n = std::char_traits<char>::length(sp);
      if (end - begin >= n && s.compare(end - n, n, sp) == 0) {
        end -= n;
        changed = true;
        break;
      }
    }
  }
  return s.substr(begin, end - begin);
}

const char* chat_family_name(ChatFamily f) {
  switch (f) {
    case ChatFamily::ChatML: return "ChatML";
    case ChatFamily::Llama2: return "Llama-2";
    case ChatFamily::Llama3: return "Llama-3";
    case ChatFamily::Falcon: return "Falcon";
    case ChatFamily::Zephyr: return "Zephyr";
    case ChatFamily::Mistral: return "Mistral";
  }
  return "?";
}

namespace {

// The known templates, in the Jinja source form real checkpoints ship (tokenizer_config.json,
// JSON-decoded); @@SYSTEM@@ marks a default system message read back from the model's template.
struct KnownTemplate {
  ChatFamily family;
  const char* text;
  const char* mistral_eos_suffix = "";
  bool llama3_always_prompt = false;
};

const KnownTemplate kKnown[] = {
    {ChatFamily::ChatML,
     R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n@@SYSTEM@@<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})"},
    {ChatFamily::ChatML,
     R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})"},
    {ChatFamily::Llama2,
     R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})"},
    // CodeLlama-Instruct: the same with Jinja's trim filter.
    {ChatFamily::Llama2,
     R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content | trim + ' ' + eos_token }}{% endif %}{% endfor %})"},
    {ChatFamily::Llama3,
     R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})"},
    {ChatFamily::Llama3,
     R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }})",
     "", true},
    {ChatFamily::Falcon,
     "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ 'User: \\n' + message['content'] }}\n{% elif "
     "message['role'] == 'system' %}\n{{ 'System: ' + message['content'] }}\n{% elif message['role'] == 'assistant' "
     "%}\n{{ 'Falcon:\\n'  + message['content']}}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ "
     "'Falcon:' }}\n{% endif %}\n{% endfor %}"},
    {ChatFamily::Zephyr,
     "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
     "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% "
     "elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif "
     "%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"},
    {ChatFamily::Mistral,
     R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})"},
    {ChatFamily::Mistral,
     R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})",
     " "},
};

// Value of a canonical literal's body (inverse of canonical_literal without the quotes);
// false when it holds an unescaped quote, i.e. the "system message" would span code.
bool canonical_body_value(const std::string& body, std::string& value) {
  value.clear();
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\'') return false;
    if (body[i] == '\\' && i + 1 < body.size()) ++i;
    value += body[i];
  }
  return true;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw InputError(p.string() + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string token_string(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

[[noreturn]] void template_error(const std::string& what) {
  throw InputError("chat template: " + what);
}

// Llama-2 and Mistral raise unless roles alternate user/assistant from the first message.
void check_alternating(const std::vector<ChatMessage>& messages, size_t first) {
  for (size_t k = first; k < messages.size(); ++k)
    if ((messages[k].role == "user") != ((k - first) % 2 == 0))
      template_error("Conversation roles must alternate user/assistant/user/assistant/...");
}

}  // namespace

ChatTemplate ChatTemplate::recognise(const std::string& template_text, const std::string& source) {
  std::string norm = normalize_jinja_template(template_text);
  // transformers always defines add_generation_prompt, so this guard renders nothing.
  const std::string guard = normalize_jinja_template(
      "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}");
  if (norm.rfind(guard, 0) == 0) norm.erase(0, guard.size());
  const std::string bos = "{{bos_token}}";
  for (const KnownTemplate& known : kKnown) {
    ChatTemplate t;
    t.family_ = known.family;
    t.mistral_eos_suffix_ = known.mistral_eos_suffix;
    t.llama3_always_prompt_ = known.llama3_always_prompt;
    const std::string canon = normalize_jinja_template(known.text);
    std::string candidate = norm;
    if (known.family == ChatFamily::ChatML && candidate.rfind(bos, 0) == 0) {
      candidate.erase(0, bos.size());
      t.leading_bos_ = true;
    }
    const size_t slot = canon.find("@@SYSTEM@@");
    if (slot == std::string::npos) {
      if (candidate == canon) return t;
      continue;
    }
    const std::string prefix = canon.substr(0, slot), suffix = canon.substr(slot + 10);
    if (candidate.size() >= prefix.size() + suffix.size() && candidate.rfind(prefix, 0) == 0 &&
        candidate.compare(candidate.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        canonical_body_value(candidate.substr(prefix.size(), candidate.size() - prefix.size() - suffix.size()),
                             t.default_system_))
      return t;
  }
  throw InputError(source + ": the chat template is not one lowbit can render (it renders ChatML, Llama-2, Llama-3, "
                            "Falcon, Zephyr and Mistral templates); run without --chat and write the prompt in the "
                            "model's format yourself");
}

ChatTemplate ChatTemplate::from_model_dir(const std::string& dir) {
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  if (fs::exists(config_path)) {
    try {
      config = nlohmann::json::parse(read_file(config_path));
    } catch (const nlohmann::json::exception& e) {
      throw InputError(config_path.string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!config.is_object()) throw InputError(config_path.string() + ": is not a JSON object");
  }
  std::string text, source = config_path.string();
  if (config.contains("chat_template") && !config["chat_template"].is_null()) {
    const nlohmann::json& t = config["chat_template"];
    if (t.is_string()) {
      text = t.get<std::string>();
    } else if (t.is_array()) {
      for (const auto& entry : t)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string())
          text = entry["template"].get<std::string>();
      if (text.empty()) throw InputError(source + ": \"chat_template\" is a list without a \"default\" template");
    } else {
      throw InputError(source + ": \"chat_template\" is neither a string nor a list of named templates");
    }
  } else if (fs::exists(fs::path(dir) / "chat_template.jinja")) {
    source = (fs::path(dir) / "chat_template.jinja").string();
    text = read_file(source);
  } else {
    throw InputError(dir + ": the model has no chat template (tokenizer_config.json \"chat_template\" or "
                           "chat_template.jinja); run without --chat");
  }
  ChatTemplate t = recognise(text, source);
  t.set_special_tokens(config.contains("bos_token") ? token_string(config["bos_token"]) : "",
                       config.contains("eos_token") ? token_string(config["eos_token"]) : "");
  return t;
}

std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& value, const std::string& where) {
  if (!value.is_array() || value.empty())
    throw InputError(where + ": \"messages\" must be a non-empty array of {\"role\", \"content\"} objects");
  std::vector<ChatMessage> out;
  for (size_t k = 0; k < value.size(); ++k) {
    const nlohmann::json& m = value[k];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw InputError(where + ": message " + std::to_string(k) + " needs a string \"role\" and a string \"content\"");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  std::string out;
  switch (family_) {
    case ChatFamily::ChatML:
      if (leading_bos_) out += bos_token_;
      for (size_t k = 0; k < messages.size(); ++k) {
        if (k == 0 && !default_system_.empty() && messages[0].role != "system")
          out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
        out += "<|im_start|>" + messages[k].role + "\n" + messages[k].content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFamily::Llama2: {
      const bool has_system = !messages.empty() && messages[0].role == "system";
      const size_t first = has_system ? 1 : 0;
      check_alternating(messages, first);
      for (size_t k = first; k < messages.size(); ++k) {
        std::string content = messages[k].content;
        if (k == first && has_system) content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
        if (messages[k].role == "user")
          out += bos_token_ + "[INST] " + python_strip(content) + " [/INST]";
        else if (messages[k].role == "assistant")
          out += " " + python_strip(content) + " " + eos_token_;
      }
      return out;
    }
    case ChatFamily::Llama3:
      for (size_t k = 0; k < messages.size(); ++k) {
        if (k == 0) out += bos_token_;
        out += "<|start_header_id|>" + messages[k].role + "<|end_header_id|>\n\n" + python_strip(messages[k].content) +
               "<|eot_id|>";
      }
      if (add_generation_prompt || llama3_always_prompt_) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFamily::Falcon:
      for (size_t k = 0; k < messages.size(); ++k) {
        const ChatMessage& m = messages[k];
        if (m.role == "user") out += "User: \n" + m.content + "\n";
        else if (m.role == "system") out += "System: " + m.content + "\n";
        else if (m.role == "assistant") out += "Falcon:\n" + m.content + "\n";
        if (k + 1 == messages.size() && add_generation_prompt) out += "Falcon:\n";
      }
      return out;
    case ChatFamily::Zephyr:
      for (size_t k = 0; k < messages.size(); ++k) {
        const ChatMessage& m = messages[k];
        if (m.role == "user") out += "<|user|>\n" + m.content + eos_token_ + "\n";
        else if (m.role == "system") out += "<|system|>\n" + m.content + eos_token_ + "\n";
        else if (m.role == "assistant") out += "<|assistant|>\n" + m.content + eos_token_ + "\n";
        if (k + 1 == messages.size() && add_generation_prompt) out += "<|assistant|>\n";
      }
      return out;
    case ChatFamily::Mistral:
      out += bos_token_;
      for (size_t k = 0; k < messages.size(); ++k) {
        if ((messages[k].role == "user") != (k % 2 == 0))
          template_error("Conversation roles must alternate user/assistant/user/assistant/...");
        if (messages[k].role == "user") out += "[INST] " + messages[k].content + " [/INST]";
        else if (messages[k].role == "assistant") out += messages[k].content + eos_token_ + mistral_eos_suffix_;
        else template_error("Only user and assistant roles are supported!");
      }
      return out;
  }
  return out;
}

}  // namespace lowbit
