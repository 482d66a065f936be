// Open-addressing hash maps for the two lookups that dominate tokenizer loading and BPE:
// token string -> id and (left id, right id) -> merge. std::unordered_map chases a pointer per
// node; with 128k tokens and 280k merges (Llama-3) those cache misses made loading ~2x slower.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

// Strings are stored once in insertion order; slots hold indices into them (-1 = empty).
class StringIdMap {
 public:
  void reserve(size_t count) {
    keys_.reserve(count);
    ids_.reserve(count);
    rehash(capacity_for(count));
  }
  // Inserts or overwrites.
  void set(std::string_view key, int32_t id) {
    if ((keys_.size() + 1) * 2 > slots_.size()) rehash(capacity_for(keys_.size() + 1));
    size_t slot = find_slot(key);
    if (slots_[slot] >= 0) {
      ids_[static_cast<size_t>(slots_[slot])] = id;
      return;
    }
    slots_[slot] = static_cast<int32_t>(keys_.size());
    keys_.emplace_back(key);
    ids_.push_back(id);
  }
  int32_t get(std::string_view key) const {
    if (slots_.empty()) return -1;
    const int32_t index = slots_[find_slot(key)];
    return index < 0 ? -1 : ids_[static_cast<size_t>(index)];
  }

 private:
  static size_t capacity_for(size_t count) {
    size_t capacity = 16;
    while (capacity < count * 2) capacity *= 2;
    return capacity;
  }
  size_t find_slot(std::string_view key) const {
    const size_t mask = slots_.size() - 1;
    size_t slot = std::hash<std::string_view>{}(key) & mask;
    while (slots_[slot] >= 0 && keys_[static_cast<size_t>(slots_[slot])] != key) slot = (slot + 1) & mask;
    return slot;
  }
  void rehash(size_t capacity) {
    if (capacity <= slots_.size()) return;
    slots_.assign(capacity, -1);
    for (size_t i = 0; i < keys_.size(); ++i) slots_[find_slot(keys_[i])] = static_cast<int32_t>(i);
  }

  std::vector<std::string> keys_;
  std::vector<int32_t> ids_;
  std::vector<int32_t> slots_;
};

// Key (left id << 32 | right id) -> (rank, merged id). Keys are never ~0 (ids are >= 0).
class MergeMap {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  void reserve(size_t count) { rehash(capacity_for(count)); }
  void set(uint64_t key, Merge merge) {
    if ((size_ + 1) * 2 > entries_.size()) rehash(capacity_for(size_ + 1));
    Entry& entry = entries_[find_slot(key)];
    if (entry.key == kEmpty) ++size_;
    entry = {key, merge};
  }
  const Merge* get(uint64_t key) const {
    if (entries_.empty()) return nullptr;
    const Entry& entry = entries_[find_slot(key)];
    return entry.key == kEmpty ? nullptr : &entry.merge;
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Entry {
    uint64_t key = kEmpty;
    Merge merge{};
  };
  static size_t capacity_for(size_t count) {
    size_t capacity = 16;
    while (capacity < count * 2) capacity *= 2;
    return capacity;
  }
  size_t find_slot(uint64_t key) const {
    const size_t mask = entries_.size() - 1;
    // Fibonacci hashing spreads the structured (id, id) keys over the table.
    size_t slot = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (entries_[slot].key != kEmpty && entries_[slot].key != key) slot = (slot + 1) & mask;
    return slot;
  }
  void rehash(size_t capacity) {
    if (capacity <= entries_.size()) return;
    std::vector<Entry> old = std::move(entries_);
    entries_.assign(capacity, Entry{});
    for (const Entry& e : old)
      if (e.key != kEmpty) entries_[find_slot(e.key)] = e;
  }

  std::vector<Entry> entries_;
  size_t size_ = 0;
};

}  // namespace lowbit
