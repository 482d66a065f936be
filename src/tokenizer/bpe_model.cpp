#include "tokenizer/bpe_model.h"

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace lowbit {

namespace {
constexpr int64_t kMaxVocabHoles = 1 << 16;  // ids may run this far past model.vocab's entry count
}  // namespace

BpeModel::BpeModel(const nlohmann::json& config, const std::string& file) {
  const std::string type = config.value("type", std::string("BPE"));
  if (type != "BPE") throw InputError(file + ": unsupported model type '" + type + "' (only BPE)");
  if (!config.value("dropout", nlohmann::json()).is_null())
    throw InputError(file + ": BPE dropout is not supported");
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = config.find(field);
    if (it != config.end() && !it->is_null() && !it->get<std::string>().empty())
      throw InputError(file + ": BPE " + field + " is not supported");
  }
  byte_fallback_ = config.value("byte_fallback", false);
  fuse_unk_ = config.value("fuse_unk", false);
  ignore_merges_ = config.value("ignore_merges", false);

  const auto& vocab = config.at("vocab");
  if (!vocab.is_object()) throw InputError(file + ": model.vocab must be an object");
  vocab_.reserve(vocab.size());
  tokens_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string& token = it.key();
    if (!it.value().is_number_integer()) throw InputError(file + ": non-integer id for token '" + token + "'");
    // Ids are dense in every real vocabulary; a few holes are tolerated, but an id far past the
    // vocabulary's size would only make the id -> token table huge (a hostile file asks for GBs).
    const int64_t id = it.value().is_number_unsigned() && it.value().get<uint64_t>() > uint64_t(INT64_MAX)
                           ? INT64_MAX
                           : it.value().get<int64_t>();
    if (id < 0) throw InputError(file + ": negative id for token '" + token + "'");
    if (id > int64_t(vocab.size()) + kMaxVocabHoles)
      throw InputError(file + ": id " + std::to_string(id) + " of token '" + token + "' is far past the " +
                       std::to_string(vocab.size()) + " entries of model.vocab");
    if (static_cast<size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(id) + 1);
    if (!tokens_[static_cast<size_t>(id)].empty())
      throw InputError(file + ": id " + std::to_string(id) + " is given to both '" +
                       tokens_[static_cast<size_t>(id)] + "' and '" + token + "'");
    tokens_[static_cast<size_t>(id)] = token;
    vocab_.set(token, id);
  }

  const auto unk = config.find("unk_token");
  if (unk != config.end() && !unk->is_null()) {
    unk_id_ = token_to_id(unk->get<std::string>());
    if (unk_id_ < 0) throw InputError(file + ": unk_token '" + unk->get<std::string>() + "' is not in the vocabulary");
  }

  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_fallback_ids_[static_cast<size_t>(b)] = token_to_id(name);
  }

  // Merges come as "left right" strings (older files) or [left, right] pairs.
  const auto& merges = config.at("merges");
  merges_.reserve(merges.size());
  std::string joined;
  int32_t rank = 0;
  for (const auto& merge : merges) {
    std::string_view left, right;
    if (merge.is_string()) {
      const std::string_view text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        throw InputError(file + ": malformed merge '" + std::string(text) + "'");
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get_ref<const std::string&>();
      right = merge[1].get_ref<const std::string&>();
    } else {
      throw InputError(file + ": malformed merge " + merge.dump());
    }
    joined.assign(left).append(right);
    const int32_t left_id = token_to_id(left), right_id = token_to_id(right);
    const int32_t merged_id = token_to_id(joined);
    if (left_id < 0 || right_id < 0 || merged_id < 0)
      throw InputError(file + ": merge '" + std::string(left) + " " + std::string(right) +
                       "' uses a token not in the vocabulary");
    // A repeated pair keeps its last rank, as tokenizers' HashMap collect does.
    merges_.set(pair_key(left_id, right_id), {rank++, merged_id});
  }
}

int32_t BpeModel::token_to_id(std::string_view token) const {
  return vocab_.get(token);
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || tokens_[static_cast<size_t>(id)].empty()) return nullptr;
  return &tokens_[static_cast<size_t>(id)];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  const int32_t whole = ignore_merges_ ? token_to_id(word) : -1;
  if (whole >= 0)
    word_ids.push_back(whole);
  else
    word_ids = merge_word(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (word.size() > kMaxCachedWordBytes) return;
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCachedWords) cache_.clear();
  cache_.emplace(std::string(word), std::move(word_ids));
}

bool BpeModel::has_byte_tokens(std::string_view character) const {
  for (const char b : character)
    if (byte_fallback_ids_[static_cast<unsigned char>(b)] < 0) return false;
  return true;
}

std::vector<int32_t> BpeModel::merge_word(std::string_view word) const {
  // Symbols form a doubly linked list over the initial characters; a merged-away symbol is
  // marked dead. Layout mirrors tokenizers' Word so that tie-breaking is identical.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, true});
  };

  // Pending unknown run: HF emits it lazily so consecutive unknowns can fuse.
  bool pending_unk = false;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t len = std::min(utf8::char_length(static_cast<unsigned char>(word[pos])), word.size() - pos);
    const std::string_view character = word.substr(pos, len);
    pos += len;
    const int32_t id = token_to_id(character);
    if (id >= 0) {
      if (pending_unk) {
        add(unk_id_);
        pending_unk = false;
      }
      add(id);
      continue;
    }
    if (byte_fallback_ && has_byte_tokens(character)) {
      // Note: like HF, a pending unk is not flushed before the byte tokens.
      for (const char b : character) add(byte_fallback_ids_[static_cast<unsigned char>(b)]);
      continue;
    }
    if (unk_id_ >= 0) {
      if (pending_unk && !fuse_unk_) add(unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) add(unk_id_);

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged_id;
    // std::priority_queue pops the largest; we want the lowest rank, then the leftmost.
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[static_cast<size_t>(left)].next;
    if (right < 0) return;
    const MergeMap::Merge* merge =
        merges_.get(pair_key(symbols[static_cast<size_t>(left)].id, symbols[static_cast<size_t>(right)].id));
    if (merge) queue.push({merge->rank, left, merge->merged_id});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) push_pair(static_cast<int32_t>(i));

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    const auto right_index = static_cast<size_t>(left.next);
    const Symbol right = symbols[right_index];
    // Skip stale entries: the pair at this position changed since it was queued.
    const MergeMap::Merge* merge = merges_.get(pair_key(left.id, right.id));
    if (!merge || merge->merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    left.next = right.next;
    symbols[right_index].alive = false;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }

  std::vector<int32_t> ids;
  for (const Symbol& s : symbols)
    if (s.alive) ids.push_back(s.id);
  return ids;
}

}  // namespace lowbit
