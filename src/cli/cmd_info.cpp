// `lowbit info`: architecture, parameter count and exact weight bytes in the chosen format, from
// config.json and the safetensors headers alone (Model::plan): nothing is read or quantized, so
// it takes milliseconds for any model size.
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/provenance.h"
#include "core/error.h"

namespace lowbit::cli {

namespace {

struct InfoFlags {
  ModelFlags model;
  bool json = false;
};

std::string arch_name(const ModelConfig& c) {
  if (c.arch == Arch::Llama) return "llama";
  return std::string("falcon") + (c.qkv_layout == QkvLayout::per_kv_group ? " (new decoder architecture)"
                                  : c.parallel_attention                   ? " (parallel attention)"
                                                                           : " (sequential)");
}

int info(const InfoFlags& flags) {
  const ModelFlags& f = flags.model;
  validate_model_flags(f);
  if (!std::filesystem::is_directory(f.model_dir))
    throw InputError(fmt::format("{}: model folder not found", f.model_dir));
  // --quant auto means what a run on this machine would use: bf16 on CUDA, f32 on the CPU.
  const bool cuda = f.device == "cuda" || (f.device == "auto" && cuda_available());
  const LoadOptions opts = load_options(f, cuda ? "cuda" : "cpu");
  const ModelConfig c = load_config(f.model_dir);
  const WeightPlan w = Model::plan(f.model_dir, opts);
  const std::string rope = c.rope_scaling.type == RopeScaling::Type::None ? "none"
                           : c.rope_scaling.type == RopeScaling::Type::Linear
                               ? fmt::format("linear x{}", c.rope_scaling.factor)
                               : fmt::format("llama3 x{}", c.rope_scaling.factor);
  const std::string format(format_name(opts.format)), head(format_name(w.head_format));
  const double linear_bits = 8.0 * double(w.linear_bytes) / double(w.linear_params);
  const double bits = 8.0 * double(w.weight_bytes) / double(w.n_params);
  if (flags.json) {
    nlohmann::ordered_json j;
    j["model"] = f.model_dir;
    j["architecture"] = c.arch == Arch::Llama ? "llama" : "falcon";
    j["model_type"] = c.model_type;
    // config.json's names for the two Falcon switches, as read back from the plain flags.
    j["new_decoder_architecture"] = c.qkv_layout == QkvLayout::per_kv_group;
    j["parallel_attn"] = c.parallel_attention;
    j["layers"] = c.n_layers;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["heads"] = c.n_heads;
    j["kv_heads"] = c.n_kv_heads;
    j["head_dim"] = c.head_dim;
    j["vocab_size"] = c.vocab_size;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["rope_theta"] = shortest_double(c.rope_theta);
    j["rope_scaling"] = rope;
    j["quant"] = format;
    j["head_quant"] = head;
    j["head_shares_embedding"] = w.head_shares_embedding;
    j["n_params"] = w.n_params;
    j["linear_params"] = w.linear_params;
    j["linear_bytes"] = w.linear_bytes;
    j["linear_bits_per_param"] = linear_bits;
    j["embedding_bytes"] = w.embedding_bytes;
    j["head_bytes"] = w.head_bytes;
    j["norm_bytes"] = w.norm_bytes;
    j["weight_bytes"] = w.weight_bytes;
    j["bits_per_param"] = bits;
    j["model_config_sha256"] = model_identity(f.model_dir).config_sha256;
    std::puts(j.dump(2).c_str());
    return 0;
  }
  fmt::print("model         {}\n", f.model_dir);
  fmt::print("architecture  {}\n", arch_name(c));
  fmt::print("layers        {}\n", c.n_layers);
  fmt::print("hidden        {} (MLP {})\n", c.hidden_size, c.intermediate_size);
  fmt::print("heads         {} query, {} key/value, head dim {}\n", c.n_heads, c.n_kv_heads, c.head_dim);
  fmt::print("vocabulary    {} (tied head: {})\n", c.vocab_size, c.tie_word_embeddings ? "yes" : "no");
  fmt::print("context       {} (rope theta {}, scaling {})\n", c.max_position_embeddings, c.rope_theta, rope);
  fmt::print("parameters    {}\n", w.n_params);
  fmt::print("format        {} (embedding {}, head {}{})\n", format, format_name(opts.format == Format::F32 ? Format::F32 : Format::BF16),
             head,
             w.head_shares_embedding ? ", one copy shared with the embedding"
             : c.tie_word_embeddings ? ", a second, quantized copy of the tied embedding"
                                     : "");
  fmt::print("linear bytes  {} ({:.3f} bits per parameter over {} linear weights)\n", w.linear_bytes, linear_bits,
             w.linear_params);
  fmt::print("weight bytes  {} ({}, {:.2f} bits per parameter; embedding {}, head {}, norms {})\n", w.weight_bytes,
             w.weight_bytes >= 1000000000 ? fmt::format("{:.2f} GB", w.weight_bytes / 1e9)
                                          : fmt::format("{:.2f} MB", w.weight_bytes / 1e6),
             bits, w.embedding_bytes, w.head_shares_embedding ? std::string("shared") : std::to_string(w.head_bytes),
             w.norm_bytes);
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<InfoFlags>();
  CLI::App* cmd = app.add_subcommand(
      "info", "print a model's architecture, parameters and exact weight bytes in a format (from the headers)");
  add_model_flags(*cmd, flags->model);
  cmd->add_flag("--json", flags->json, "print one JSON object");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = info(*flags);
  });
}

}  // namespace lowbit::cli
