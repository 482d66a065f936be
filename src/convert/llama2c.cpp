#include "convert/llama2c.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "io/safetensors.h"
#include "tokenizer/utf8.h"

namespace lowbit {

static_assert(std::endian::native == std::endian::little,
              "llama2.c checkpoints are little-endian and are read in place");

namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

// The seven int32 of a llama2.c v0 header, in file order.
struct Llama2cHeader {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // negative: the classifier is stored separately (untied)
  int32_t seq_len = 0;

  int vocab() const { return vocab_size < 0 ? -vocab_size : vocab_size; }
  bool tied() const { return vocab_size > 0; }
  int head_dim() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_dim(); }
};

// Float counts of the tensors in file order; the two freq_cis tables are llama2.c's precomputed
// RoPE, which HF recomputes, so they are skipped.
struct CheckpointLayout {
  uint64_t embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis, classifier;
  uint64_t total() const {
    return embedding + rms_att + wq + wk + wv + wo + rms_ffn + w1 + w2 + w3 + rms_final +
           2 * freq_cis + classifier;
  }
};

std::vector<uint8_t> read_binary_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw InputError(path + ": cannot read its size");
  in.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw InputError(path + ": read failed");
  return bytes;
}

uint64_t checked_product(const std::string& path, std::initializer_list<uint64_t> factors) {
  uint64_t product = 1;
  for (uint64_t f : factors)
    if (__builtin_mul_overflow(product, f, &product))
      throw InputError(path + ": header sizes overflow; not a llama2.c checkpoint");
  return product;
}

Llama2cHeader read_header(const std::string& path, const std::vector<uint8_t>& bytes) {
  if (bytes.size() < 28)
    throw InputError(path + ": " + std::to_string(bytes.size()) +
                     " bytes is too short for a llama2.c header (28 bytes)");
  uint32_t magic;
  std::memcpy(&magic, bytes.data(), 4);
  if (magic == 0x616b3432u)  // "ak42", llama2.c's version 1/2 exports
    throw InputError(path + ": is a llama2.c version-1/2 export; lowbit converts the legacy v0 "
                            "format (export.py --version 0)");
  Llama2cHeader h;
  std::memcpy(&h, bytes.data(), 28);
  auto positive = [&](const char* field, int32_t v) {
    if (v <= 0)
      throw InputError(path + ": header field " + field + " is " + std::to_string(v) +
                       "; must be positive");
  };
  positive("dim", h.dim);
  positive("hidden_dim", h.hidden_dim);
  positive("n_layers", h.n_layers);
  positive("n_heads", h.n_heads);
  positive("n_kv_heads", h.n_kv_heads);
  positive("seq_len", h.seq_len);
  if (h.vocab_size == 0 || h.vocab_size == INT32_MIN)
    throw InputError(path + ": header field vocab_size is " + std::to_string(h.vocab_size));
  if (h.dim % h.n_heads != 0)
    throw InputError(path + ": header n_heads " + std::to_string(h.n_heads) +
                     " does not divide dim " + std::to_string(h.dim));
  if (h.n_heads % h.n_kv_heads != 0)
    throw InputError(path + ": header n_kv_heads " + std::to_string(h.n_kv_heads) +
                     " does not divide n_heads " + std::to_string(h.n_heads));
  if (h.head_dim() % 2 != 0)
    throw InputError(path + ": head size " + std::to_string(h.head_dim()) +
                     " (dim / n_heads) is odd; RoPE needs pairs");
  return h;
}

CheckpointLayout layout_of(const std::string& path, const Llama2cHeader& h) {
  const uint64_t dim = uint64_t(h.dim), hidden = uint64_t(h.hidden_dim), L = uint64_t(h.n_layers);
  const uint64_t kv_dim = uint64_t(h.kv_dim()), vocab = uint64_t(h.vocab());
  CheckpointLayout l{};
  l.embedding = checked_product(path, {vocab, dim});
  l.rms_att = checked_product(path, {L, dim});
  l.wq = checked_product(path, {L, dim, dim});
  l.wk = checked_product(path, {L, kv_dim, dim});
  l.wv = l.wk;
  l.wo = l.wq;
  l.rms_ffn = l.rms_att;
  l.w1 = checked_product(path, {L, hidden, dim});
  l.w2 = l.w1;
  l.w3 = l.w1;
  l.rms_final = dim;
  l.freq_cis = checked_product(path, {uint64_t(h.seq_len), uint64_t(h.head_dim() / 2)});
  l.classifier = h.tied() ? 0 : l.embedding;
  // total() cannot overflow once each term fits: every term is below 2^64 / 16 or the
  // file-size comparison below fails first.
  for (uint64_t term : {l.embedding, l.wq, l.wk, l.w1, l.freq_cis})
    if (term > (uint64_t(1) << 58))
      throw InputError(path + ": header sizes are implausibly large; not a llama2.c checkpoint");
  return l;
}

std::string header_summary(const Llama2cHeader& h) {
  return "dim " + std::to_string(h.dim) + ", hidden_dim " + std::to_string(h.hidden_dim) +
         ", n_layers " + std::to_string(h.n_layers) + ", n_heads " + std::to_string(h.n_heads) +
         ", n_kv_heads " + std::to_string(h.n_kv_heads) + ", vocab_size " +
         std::to_string(h.vocab_size) + ", seq_len " + std::to_string(h.seq_len);
}

// Number of UTF-8 code points in s, or -1 when s is not valid UTF-8 (the tokenizer's strict
// definition: no overlong forms, surrogates or code points past U+10FFFF, which JSON cannot hold).
int64_t utf8_length(const std::string& s) {
  if (!utf8::is_valid(s)) return -1;
  int64_t count = 0;
  for (size_t i = 0; i < s.size(); i += utf8::char_length(static_cast<unsigned char>(s[i]))) ++count;
  return count;
}

// Byte offsets of the code point boundaries strictly inside s.
std::vector<size_t> inner_boundaries(const std::string& s) {
  std::vector<size_t> out;
  for (size_t i = 1; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) out.push_back(i);
  return out;
}

const std::string kSpaceMarker = "\xe2\x96\x81";  // U+2581, SentencePiece's word-boundary marker

// llama2.c's tokenizer file: int32 max_token_length, then per piece float32 score, int32 length,
// bytes. Its exporter wrote SentencePiece's '▁' as ' ' and wrapped <s>/</s> in newlines; this
// restores the SentencePiece pieces.
std::vector<std::pair<std::string, float>> read_llama2c_tokenizer(const std::string& path,
                                                                  int expected_pieces) {
  const std::vector<uint8_t> bytes = read_binary_file(path);
  if (bytes.size() < 4)
    throw InputError(path + ": too short for a llama2.c tokenizer (no max_token_length)");
  size_t offset = 4;
  std::vector<std::pair<std::string, float>> pieces;
  while (offset < bytes.size()) {
    const int id = int(pieces.size());
    if (bytes.size() - offset < 8)
      throw InputError(path + ": truncated inside piece " + std::to_string(id));
    float score;
    int32_t length;
    std::memcpy(&score, bytes.data() + offset, 4);
    std::memcpy(&length, bytes.data() + offset + 4, 4);
    offset += 8;
    if (length <= 0 || uint64_t(length) > bytes.size() - offset)
      throw InputError(path + ": piece " + std::to_string(id) + " has length " +
                       std::to_string(length) + ", past the end of the file");
    std::string text(reinterpret_cast<const char*>(bytes.data() + offset), size_t(length));
    offset += size_t(length);
    pieces.emplace_back(std::move(text), score);
  }
  if (int(pieces.size()) != expected_pieces)
    throw InputError(path + ": has " + std::to_string(pieces.size()) +
                     " pieces but the checkpoint's vocab_size is " + std::to_string(expected_pieces));
  if (expected_pieces < 3 + 256)
    throw InputError(path + ": has " + std::to_string(expected_pieces) +
                     " pieces; a byte-fallback vocabulary needs <unk>, <s>, </s> and 256 byte pieces");

  const char* specials[3] = {"<unk>", "<s>", "</s>"};
  for (int id = 0; id < 3; ++id) {
    std::string& text = pieces[size_t(id)].first;
    if (text != specials[id] && text != "\n" + std::string(specials[id]) + "\n")
      throw InputError(path + ": piece " + std::to_string(id) + " should be " + specials[id]);
    text = specials[id];
  }
  for (int b = 0; b < 256; ++b) {
    char expected[8];
    std::snprintf(expected, sizeof expected, "<0x%02X>", b);
    if (pieces[size_t(3 + b)].first != expected)
      throw InputError(path + ": piece " + std::to_string(3 + b) + " should be the byte piece " +
                       expected);
  }
  std::unordered_map<std::string, int> seen;
  for (size_t id = 3; id < pieces.size(); ++id) {
    std::string& text = pieces[id].first;
    std::string restored;
    for (char c : text) restored += c == ' ' ? kSpaceMarker : std::string(1, c);
    text = std::move(restored);
    if (utf8_length(text) < 0)
      throw InputError(path + ": piece " + std::to_string(id) + " is not valid UTF-8");
  }
  for (size_t id = 0; id < pieces.size(); ++id) {
    auto [it, inserted] = seen.emplace(pieces[id].first, int(id));
    if (!inserted)
      throw InputError(path + ": piece '" + pieces[id].first + "' appears twice (ids " +
                       std::to_string(it->second) + " and " + std::to_string(id) + ")");
  }
  return pieces;
}

ordered_json special_token_json(int id, const std::string& content) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", true}};
}

// tokenizer.json in the form transformers' LlamaConverter gives Llama-2 (legacy): SentencePiece
// BPE as a byte-fallback BPE model, '▁' prepended and spaces replaced by the normalizer.
ordered_json tokenizer_json(const std::vector<std::pair<std::string, float>>& pieces) {
  const char* specials[3] = {"<unk>", "<s>", "</s>"};
  ordered_json added = ordered_json::array();
  for (int id = 0; id < 3; ++id) added.push_back(special_token_json(id, specials[id]));

  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < pieces.size(); ++id) vocab[pieces[id].first] = id;
  ordered_json merges = ordered_json::array();
  for (const auto& [left, right] : sentencepiece_merges(pieces)) merges.push_back({left, right});

  auto string_pattern = [](const std::string& s) { return ordered_json{{"String", s}}; };
  ordered_json t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = added;
  t["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", kSpaceMarker}},
        {{"type", "Replace"}, {"pattern", string_pattern(" ")}, {"content", kSpaceMarker}}}}};
  t["pre_tokenizer"] = nullptr;
  auto special = [](const char* id, int type_id) {
    return ordered_json{{"SpecialToken", {{"id", id}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* id, int type_id) {
    return ordered_json{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
  };
  t["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {special("<s>", 0), sequence("A", 0)}},
      {"pair", {special("<s>", 0), sequence("A", 0), special("<s>", 1), sequence("B", 1)}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  t["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", string_pattern(kSpaceMarker)}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  t["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  return t;
}

// PreTrainedTokenizerFast, not LlamaTokenizerFast: transformers 5 rebuilds a Llama tokenizer with a
// Metaspace pre-tokenizer that skips the prepended '▁' when the text starts with a space, which
// llama2.c's encoder does not; the generic class runs tokenizer.json exactly as written.
ordered_json tokenizer_config_json(int model_max_length) {
  const char* specials[3] = {"<unk>", "<s>", "</s>"};
  ordered_json decoder = ordered_json::object();
  for (int id = 0; id < 3; ++id) {
    ordered_json entry = special_token_json(id, specials[id]);
    entry.erase("id");
    decoder[std::to_string(id)] = entry;
  }
  return {{"add_bos_token", true},
          {"add_eos_token", false},
          {"added_tokens_decoder", decoder},
          {"bos_token", "<s>"},
          {"clean_up_tokenization_spaces", false},
          {"eos_token", "</s>"},
          {"legacy", true},
          {"model_max_length", model_max_length},
          {"pad_token", nullptr},
          {"tokenizer_class", "PreTrainedTokenizerFast"},
          {"unk_token", "<unk>"}};
}

ordered_json config_json(const Llama2cHeader& h) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", h.dim},
          {"intermediate_size", h.hidden_dim},
          {"num_hidden_layers", h.n_layers},
          {"num_attention_heads", h.n_heads},
          {"num_key_value_heads", h.n_kv_heads},
          {"head_dim", h.head_dim()},
          {"hidden_act", "silu"},
          {"max_position_embeddings", h.seq_len},
          {"rms_norm_eps", 1e-5},  // llama2.c's rmsnorm epsilon
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"tie_word_embeddings", h.tied()},
          {"vocab_size", h.vocab()},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"torch_dtype", "float32"},
          {"initializer_range", 0.02},
          {"use_cache", true}};
}

void write_json(const std::string& path, const ordered_json& value) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(path + ": cannot create (" + std::strerror(errno) + ")");
  out << value.dump(2) << "\n";
  if (!out) throw InputError(path + ": write failed");
}

}  // namespace

std::vector<float> permute_rows_for_hf_rope(const float* w, int n_heads, int head_dim, int cols) {
  const size_t half = size_t(head_dim / 2), row = size_t(cols);
  std::vector<float> out(size_t(n_heads) * size_t(head_dim) * row);
  for (size_t h = 0; h < size_t(n_heads); ++h)
    for (size_t j = 0; j < 2; ++j)
      for (size_t i = 0; i < half; ++i) {
        const float* src = w + (h * size_t(head_dim) + 2 * i + j) * row;
        std::copy(src, src + row, out.begin() + ptrdiff_t((h * size_t(head_dim) + j * half + i) * row));
      }
  return out;
}

std::vector<std::pair<std::string, std::string>> sentencepiece_merges(
    const std::vector<std::pair<std::string, float>>& pieces) {
  std::unordered_map<std::string, size_t> id_of;
  for (size_t id = 0; id < pieces.size(); ++id) id_of.emplace(pieces[id].first, id);

  struct Merge {
    size_t left, right;
    float score;
    int64_t left_len, right_len;  // code points
  };
  std::vector<Merge> merges;
  for (const auto& [piece, score] : pieces) {
    std::vector<Merge> local;
    for (size_t cut : inner_boundaries(piece)) {
      auto left = id_of.find(piece.substr(0, cut));
      auto right = id_of.find(piece.substr(cut));
      if (left == id_of.end() || right == id_of.end()) continue;
      local.push_back({left->second, right->second, score, utf8_length(left->first),
                       utf8_length(right->first)});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  // Python's sorted(..., reverse=True) is stable: equal keys keep their order.
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_len != b.left_len) return a.left_len > b.left_len;
    return a.right_len > b.right_len;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges) out.emplace_back(pieces[m.left].first, pieces[m.right].first);
  return out;
}

void convert_llama2c(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     const std::string& out_dir) {
  const std::vector<uint8_t> bytes = read_binary_file(checkpoint_path);
  const Llama2cHeader h = read_header(checkpoint_path, bytes);
  const CheckpointLayout layout = layout_of(checkpoint_path, h);
  const uint64_t expected_bytes = 28 + 4 * layout.total();
  if (bytes.size() != expected_bytes)
    throw InputError(checkpoint_path + ": has " + std::to_string(bytes.size()) + " bytes but its header (" +
                     header_summary(h) + ") needs " + std::to_string(expected_bytes) +
                     (bytes.size() < expected_bytes ? "; the file is truncated"
                                                    : "; not a llama2.c v0 checkpoint"));
  const auto pieces = read_llama2c_tokenizer(tokenizer_path, h.vocab());

  // The float data starts at byte 28, so it is 4-byte aligned inside the vector's buffer.
  std::vector<float> floats(size_t(layout.total()));
  std::memcpy(floats.data(), bytes.data() + 28, floats.size() * 4);
  const float* cursor = floats.data();
  auto take = [&](uint64_t count) {
    const float* p = cursor;
    cursor += count;
    return p;
  };
  const float* embedding = take(layout.embedding);  // (vocab, dim)
  const float* rms_att = take(layout.rms_att);      // (L, dim)
  const float* wq = take(layout.wq);                // (L, dim, dim)
  const float* wk = take(layout.wk);                // (L, kv_dim, dim)
  const float* wv = take(layout.wv);                // (L, kv_dim, dim)
  const float* wo = take(layout.wo);                // (L, dim, dim)
  const float* rms_ffn = take(layout.rms_ffn);      // (L, dim)
  const float* w1 = take(layout.w1);                // (L, hidden, dim): gate
  const float* w2 = take(layout.w2);                // (L, dim, hidden): down
  const float* w3 = take(layout.w3);                // (L, hidden, dim): up
  const float* rms_final = take(layout.rms_final);  // (dim)
  take(2 * layout.freq_cis);
  const float* classifier = take(layout.classifier);  // (vocab, dim) when untied

  const int64_t dim = h.dim, hidden = h.hidden_dim, kv_dim = h.kv_dim(), vocab = h.vocab();
  std::vector<std::vector<float>> permuted;  // q/k per layer, kept alive until written
  permuted.reserve(size_t(2 * h.n_layers));
  std::vector<TensorToWrite> tensors;
  tensors.push_back({"model.embed_tokens.weight", DType::F32, {vocab, dim}, embedding});
  for (int64_t l = 0; l < h.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    permuted.push_back(permute_rows_for_hf_rope(wq + l * dim * dim, h.n_heads, h.head_dim(), h.dim));
    const float* q = permuted.back().data();
    permuted.push_back(permute_rows_for_hf_rope(wk + l * kv_dim * dim, h.n_kv_heads, h.head_dim(), h.dim));
    const float* k = permuted.back().data();
    tensors.push_back({p + "input_layernorm.weight", DType::F32, {dim}, rms_att + l * dim});
    tensors.push_back({p + "self_attn.q_proj.weight", DType::F32, {dim, dim}, q});
    tensors.push_back({p + "self_attn.k_proj.weight", DType::F32, {kv_dim, dim}, k});
    tensors.push_back({p + "self_attn.v_proj.weight", DType::F32, {kv_dim, dim}, wv + l * kv_dim * dim});
    tensors.push_back({p + "self_attn.o_proj.weight", DType::F32, {dim, dim}, wo + l * dim * dim});
    tensors.push_back({p + "post_attention_layernorm.weight", DType::F32, {dim}, rms_ffn + l * dim});
    tensors.push_back({p + "mlp.gate_proj.weight", DType::F32, {hidden, dim}, w1 + l * hidden * dim});
    tensors.push_back({p + "mlp.up_proj.weight", DType::F32, {hidden, dim}, w3 + l * hidden * dim});
    tensors.push_back({p + "mlp.down_proj.weight", DType::F32, {dim, hidden}, w2 + l * dim * hidden});
  }
  tensors.push_back({"model.norm.weight", DType::F32, {dim}, rms_final});
  if (!h.tied()) tensors.push_back({"lm_head.weight", DType::F32, {vocab, dim}, classifier});

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw InputError(out_dir + ": cannot create (" + ec.message() + ")");
  const fs::path out(out_dir);
  write_json((out / "config.json").string(), config_json(h));
  write_safetensors((out / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_json((out / "tokenizer.json").string(), tokenizer_json(pieces));
  write_json((out / "tokenizer_config.json").string(), tokenizer_config_json(h.seq_len));
}

}  // namespace lowbit
