#include "tokenizer/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace lowbit {

TokenizerImpl::TokenizerImpl(const nlohmann::json& config, const std::string& file)
    : normalizer_(make_normalizer(config.value("normalizer", nlohmann::json()), file)),
      pre_tokenizer_(make_pre_tokenizer(config.value("pre_tokenizer", nlohmann::json()), file)),
      model_(config.at("model"), file),
      added_(config.value("added_tokens", nlohmann::json()), normalizer_.get(), file),
      post_processor_(make_post_processor(config.value("post_processor", nlohmann::json()), file)),
      decoder_(make_decoder(config.value("decoder", nlohmann::json()), file)) {
  // Truncation would cut encode()'s output; lowbit never wants that from the tokenizer.
  if (!config.value("truncation", nlohmann::json()).is_null())
    throw InputError(file + ": truncation is not supported (set \"truncation\": null)");

  int32_t max_id = model_.max_id();
  for (const AddedToken& token : added_.tokens()) max_id = std::max(max_id, token.id);
  vocab_size_ = max_id + 1;

  // BOS: what the post-processor puts first (Llama-2's template "<s> $A"); failing that, a token
  // with a conventional BOS name. EOS: a token with a conventional EOS name, checked in this
  // order. Falcon therefore has no BOS (its HF tokenizer adds none) and EOS <|endoftext|>.
  if (post_processor_) {
    const std::vector<int32_t> prefix = post_processor_->prefix_ids();
    if (!prefix.empty()) bos_id_ = prefix.front();
  }
  if (bos_id_ < 0) bos_id_ = find_named_token({"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"});
  eos_id_ = find_named_token({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"});
}

int32_t TokenizerImpl::find_named_token(std::initializer_list<std::string_view> names) const {
  for (const std::string_view name : names) {
    const int32_t id = token_to_id(name);
    if (id >= 0) return id;
  }
  return -1;
}

std::vector<int32_t> TokenizerImpl::encode(std::string_view text, bool add_special) const {
  utf8::validate(text, "tokenizer input");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<PreToken> words;
  for (const Segment& raw : added_.split_raw(text)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    const std::string_view raw_text = text.substr(raw.start, raw.end - raw.start);
    const std::string normalized = normalizer_ ? normalizer_->normalize(raw_text) : std::string(raw_text);
    for (const Segment& segment : added_.split_normalized(normalized)) {
      if (segment.id >= 0) {
        ids.push_back(segment.id);
        continue;
      }
      words.clear();
      words.push_back({normalized.substr(segment.start, segment.end - segment.start),
                       raw.start == 0 && segment.start == 0});
      if (pre_tokenizer_) pre_tokenizer_->split(words);
      for (const PreToken& word : words) model_.encode_word(word.text, ids);
    }
  }
  if (add_special && post_processor_) post_processor_->process(ids);
  return ids;
}

std::string TokenizerImpl::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (const AddedToken* added = added_.find(id)) {
      if (!(skip_special && added->special)) tokens.push_back(added->token_string);
    } else if (const std::string* token = model_.id_to_token(id)) {
      tokens.push_back(*token);
    }
    // Unknown ids are dropped, as tokenizers does.
  }
  std::string text;
  if (decoder_) {
    decoder_->decode_chain(tokens);
    for (const std::string& piece : tokens) text += piece;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
  }
  return text;
}

bool TokenizerImpl::is_added_token(int32_t id) const { return added_.find(id) != nullptr; }

bool TokenizerImpl::is_special(int32_t id) const {
  const AddedToken* added = added_.find(id);
  return added && added->special;
}

int32_t TokenizerImpl::token_to_id(std::string_view token) const {
  const int32_t id = added_.token_to_id(token);
  return id >= 0 ? id : model_.token_to_id(token);
}

std::string TokenizerImpl::id_to_token(int32_t id) const {
  if (const AddedToken* added = added_.find(id)) return added->token_string;
  const std::string* token = model_.id_to_token(id);
  return token ? *token : std::string();
}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) throw InputError(tokenizer_json_path + ": cannot open tokenizer file");
  std::stringstream contents;
  contents << in.rdbuf();
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(contents.str());
  } catch (const nlohmann::json::exception& e) {
    throw InputError(tokenizer_json_path + ": not valid JSON: " + e.what());
  }
  if (!config.is_object() || !config.contains("model"))
    throw InputError(tokenizer_json_path + ": not a tokenizer.json (no \"model\")");
  try {
    return Tokenizer(std::make_unique<TokenizerImpl>(config, tokenizer_json_path));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(tokenizer_json_path + ": malformed tokenizer.json: " + e.what());
  }
}

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  return impl_->encode(text, add_special);
}
std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return impl_->decode(ids, skip_special);
}
int Tokenizer::vocab_size() const { return impl_->vocab_size(); }
int32_t Tokenizer::bos_id() const { return impl_->bos_id(); }
int32_t Tokenizer::eos_id() const { return impl_->eos_id(); }
bool Tokenizer::is_special(int32_t id) const { return impl_->is_special(id); }
int32_t Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }
std::string Tokenizer::id_to_token(int32_t id) const { return impl_->id_to_token(id); }

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special) : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::decode_window() const {
  const auto first = ids_.begin() + static_cast<std::ptrdiff_t>(window_start_);
  return tok_.decode(std::vector<int32_t>(first, ids_.end()), skip_special_);
}

// A SentencePiece byte-fallback piece "<0xXX>".
bool StreamDecoder::is_byte_piece(int32_t id) const {
  const std::string token = tok_.id_to_token(id);
  return token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>';
}

bool StreamDecoder::is_dropped(int32_t id) const {
  if (id < 0 || id >= tok_.vocab_size()) return true;
  if (skip_special_ && tok_.is_special(id)) return true;
  return tok_.id_to_token(id).empty();
}

void StreamDecoder::prime(const std::vector<int32_t>& ids) {
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  emitted_ = decode_window().size();
}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  // ByteFallback decodes a run of byte pieces as a whole: as UTF-8 when the run is valid, else
  // one U+FFFD per byte, including bytes that looked complete on their own. So the text of an
  // unfinished run can still change; nothing is emitted until a non-byte token ends it (or flush).
  // An id that decode drops (outside the vocabulary, or a special token being skipped) is removed
  // before the decoders run, so it does not end a byte run either: hold it the same way.
  if (is_byte_piece(id) || is_dropped(id)) return {};
  const std::string text = decode_window();
  // Trailing U+FFFD may be a character whose remaining bytes are still to come (decode repairs
  // an unfinished UTF-8 sequence with it), so it is held back until a later id settles it.
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t stable = text.size();
  while (stable >= kReplacement.size() &&
         std::string_view(text).substr(stable - kReplacement.size(), kReplacement.size()) == kReplacement)
    stable -= kReplacement.size();
  std::string out;
  if (stable > emitted_) {
    out = text.substr(emitted_, stable - emitted_);
    emitted_ = stable;
  }
  advance_window();
  return out;
}

void StreamDecoder::advance_window() {
  // Decoders act on the start of their input (Strip, Metaspace's first token, skipped special
  // tokens) and on runs of adjacent tokens (ByteFallback bytes, byte-level UTF-8). A new start
  // w is safe when ids_[w] is an ordinary token that decodes alone to whole characters and the
  // text decoded from w is exactly the tail of the current window's text: then every later id
  // adds the same text in both windows.
  constexpr size_t kMaxWindow = 64, kKeep = 8;
  if (ids_.size() - window_start_ <= kMaxWindow) return;
  const std::string current = decode_window();
  for (size_t w = ids_.size() - kKeep; w < ids_.size(); ++w) {
    const int32_t first = ids_[w];
    if (tok_.impl().is_added_token(first)) continue;
    if (is_byte_piece(first)) continue;
    const std::string alone = tok_.decode({first}, skip_special_);
    if (alone.empty() || alone.find("\xEF\xBF\xBD") != std::string::npos) continue;
    const std::string from_w =
        tok_.decode(std::vector<int32_t>(ids_.begin() + static_cast<std::ptrdiff_t>(w), ids_.end()), skip_special_);
    if (from_w.size() > current.size()) continue;
    const size_t dropped = current.size() - from_w.size();
    if (dropped > emitted_ || current.compare(dropped, std::string::npos, from_w) != 0) continue;
    window_start_ = w;
    emitted_ -= dropped;
    return;
  }
}

std::string StreamDecoder::flush() {
  const std::string text = decode_window();
  std::string out = emitted_ < text.size() ? text.substr(emitted_) : std::string();
  emitted_ = text.size();
  return out;
}

}  // namespace lowbit
