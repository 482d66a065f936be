#include "tokenizer/added_vocabulary.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace lowbit {
namespace {

std::string_view char_before(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return text.substr(start, pos - start);
}

std::string_view char_at(std::string_view text, size_t pos) {
  return text.substr(pos, std::min(utf8::char_length(static_cast<unsigned char>(text[pos])), text.size() - pos));
}

}  // namespace

void AddedVocabulary::Matcher::add(std::string_view text, int32_t token_index) {
  if (text.empty()) return;
  int32_t node = 0;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    const auto it = nodes[static_cast<size_t>(node)].children.find(byte);
    if (it != nodes[static_cast<size_t>(node)].children.end()) {
      node = it->second;
    } else {
      const auto next = static_cast<int32_t>(nodes.size());
      nodes[static_cast<size_t>(node)].children.emplace(byte, next);
      nodes.emplace_back();
      node = next;
    }
  }
  // The first token listed keeps a duplicated string.
  if (nodes[static_cast<size_t>(node)].token_index < 0) nodes[static_cast<size_t>(node)].token_index = token_index;
  can_start[static_cast<unsigned char>(text[0])] = true;
}

void AddedVocabulary::Matcher::find(std::string_view text, size_t from, size_t& start, size_t& end,
                                    int32_t& token_index) const {
  token_index = -1;
  for (size_t s = from; s < text.size(); ++s) {
    if (!can_start[static_cast<unsigned char>(text[s])]) continue;
    int32_t node = 0;
    for (size_t i = s; i < text.size(); ++i) {
      const auto& children = nodes[static_cast<size_t>(node)].children;
      const auto it = children.find(static_cast<unsigned char>(text[i]));
      if (it == children.end()) break;
      node = it->second;
      if (nodes[static_cast<size_t>(node)].token_index >= 0) {
        token_index = nodes[static_cast<size_t>(node)].token_index;
        start = s;
        end = i + 1;
      }
    }
    if (token_index >= 0) return;
  }
}

AddedVocabulary::AddedVocabulary(const nlohmann::json& added_tokens, const Normalizer* normalizer,
                                 const std::string& file) {
  if (added_tokens.is_null()) return;
  for (const auto& entry : added_tokens) {
    AddedToken token;
    token.id = entry.at("id").get<int32_t>();
    token.content = entry.at("content").get<std::string>();
    token.special = entry.value("special", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.single_word = entry.value("single_word", false);
    token.normalized = entry.value("normalized", !token.special);
    utf8::validate(token.content, file + ": added token");
    index_of_id_[token.id] = tokens_.size();
    tokens_.push_back(std::move(token));
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    AddedToken& token = tokens_[i];
    token.token_string = token.normalized && normalizer ? normalizer->normalize(token.content) : token.content;
    // Rust's char::is_alphanumeric, approximated by general categories L and N.
    if (token.single_word && !word_character_) word_character_ = std::make_unique<Regex>(R"(^[\p{L}\p{N}])", file);
    if (token.normalized)
      normalized_.add(token.token_string, static_cast<int32_t>(i));
    else
      raw_.add(token.content, static_cast<int32_t>(i));
  }
}

bool AddedVocabulary::is_word_character(std::string_view character) const {
  return !word_character_->find_all(character).empty();
}

const AddedToken* AddedVocabulary::find(int32_t id) const {
  const auto it = index_of_id_.find(id);
  return it == index_of_id_.end() ? nullptr : &tokens_[it->second];
}

int32_t AddedVocabulary::token_to_id(std::string_view content) const {
  for (const AddedToken& token : tokens_)
    if (token.content == content) return token.id;
  return -1;
}

std::vector<Segment> AddedVocabulary::split(std::string_view text, const Matcher& matcher) const {
  std::vector<Segment> segments;
  if (matcher.empty() || text.empty()) {
    segments.push_back({0, text.size(), -1});
    return segments;
  }
  size_t consumed = 0;  // end of the last emitted segment
  size_t search_from = 0;
  while (true) {
    size_t start = 0, end = 0;
    int32_t token_index;
    matcher.find(text, search_from, start, end, token_index);
    if (token_index < 0) break;
    search_from = end;
    if (start < consumed) continue;  // inside whitespace an rstrip already swallowed
    const AddedToken& token = tokens_[static_cast<size_t>(token_index)];
    if (token.single_word) {
      const bool word_before = start > 0 && is_word_character(char_before(text, start));
      const bool word_after = end < text.size() && is_word_character(char_at(text, end));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > consumed) {
        size_t char_start = new_start - 1;
        while (char_start > 0 && (static_cast<unsigned char>(text[char_start]) & 0xC0) == 0x80) --char_start;
        size_t probe = char_start;
        if (!utf8::is_whitespace(utf8::next_code_point(text, probe))) break;
        new_start = char_start;
      }
      start = new_start;
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t probe = end;
        if (!utf8::is_whitespace(utf8::next_code_point(text, probe))) break;
        end = probe;
      }
    }
    if (start > consumed) segments.push_back({consumed, start, -1});
    segments.push_back({start, end, token.id});
    consumed = end;
  }
  if (consumed != text.size()) segments.push_back({consumed, text.size(), -1});
  return segments;
}

}  // namespace lowbit
