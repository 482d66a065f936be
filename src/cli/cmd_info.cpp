// `lowbit info`: architecture, parameter count and exact weight bytes in the chosen format.
#include <cstdio>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/session.h"

namespace lowbit::cli {

namespace {

int info(const ModelFlags& f) {
  Session s = open_session(f);
  const ModelConfig& c = s.model->config();
  const Model& m = *s.model;
  std::string rope = c.rope_scaling.type == RopeScaling::Type::None     ? "none"
                     : c.rope_scaling.type == RopeScaling::Type::Linear ? fmt::format("linear x{}", c.rope_scaling.factor)
                                                                        : fmt::format("llama3 x{}", c.rope_scaling.factor);
  fmt::print("model         {}\n", f.model_dir);
  fmt::print("architecture  {}{}\n", c.arch == Arch::Llama ? "llama" : "falcon",
             c.arch == Arch::Falcon ? (c.new_decoder_architecture ? " (new decoder architecture)"
                                       : c.parallel_attn          ? " (parallel attention)"
                                                                  : " (sequential)")
                                    : "");
  fmt::print("layers        {}\n", c.n_layers);
  fmt::print("hidden        {} (MLP {})\n", c.hidden_size, c.intermediate_size);
  fmt::print("heads         {} query, {} key/value, head dim {}\n", c.n_heads, c.n_kv_heads, c.head_dim);
  fmt::print("vocabulary    {} (tied head: {})\n", c.vocab_size, c.tie_word_embeddings ? "yes" : "no");
  fmt::print("context       {} (rope theta {}, scaling {})\n", c.max_position_embeddings, c.rope_theta, rope);
  fmt::print("parameters    {}\n", m.n_params());
  fmt::print("format        {} (head: {})\n", format_name(m.options().format),
             m.options().keep_head ? "16-bit" : "quantized");
  fmt::print("linear bytes  {} ({:.3f} bits per parameter over {} linear weights)\n", m.linear_bytes(),
             8.0 * double(m.linear_bytes()) / double(m.linear_params()), m.linear_params());
  fmt::print("weight bytes  {} ({:.2f} MB, embeddings, head and norms included)\n", m.weight_bytes(),
             double(m.weight_bytes()) / 1e6);
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ModelFlags>();
  CLI::App* cmd = app.add_subcommand("info", "print a model's architecture, parameters and weight bytes");
  add_model_flags(*cmd, *flags);
  cmd->callback([flags, &exit_code] { exit_code = info(*flags); });
}

}  // namespace lowbit::cli
