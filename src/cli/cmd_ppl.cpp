// `lowbit ppl`: perplexity of a text under a model (sliding window, as HF's perplexity guide),
// optionally with the mean KL divergence from, and top-1 agreement with, the same model loaded in
// a base format (e.g. how far nf4 is from bf16).
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/session.h"
#include "core/error.h"
#include "generate/perplexity.h"

namespace lowbit::cli {

namespace {

struct PplFlags {
  ModelFlags model;
  std::string quant_list = "auto";
  std::string text_file;
  std::optional<int> window;
  std::optional<int> stride;
  std::string kl_base;
  bool json = false;
};

Format parse_flag_format(const std::string& flag, const std::string& value) {
  try {
    return parse_format(value);
  } catch (const UsageError& e) {
    throw UsageError(fmt::format("{}: {}", flag, e.what()));
  }
}

int run_ppl(const PplFlags& f) {
  if (f.text_file.empty()) throw UsageError("-f,--file: give the text to score");
  validate_model_flags(f.model);
  std::vector<std::string> quants;
  {
    std::stringstream ss(f.quant_list);
    std::string item;
    while (std::getline(ss, item, ',')) {
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (item.empty()) throw UsageError(fmt::format("--quant '{}': empty list entry", f.quant_list));
      if (item != "auto") parse_flag_format("--quant", item);
      if (std::find(quants.begin(), quants.end(), item) != quants.end())
        throw UsageError(fmt::format("--quant '{}': {} appears twice", f.quant_list, item));
      quants.push_back(item);
    }
  }
  if (quants.empty()) throw UsageError("--quant: give at least one format");
  const std::string text = read_text_file(f.text_file);  // the exact text: no newline is stripped
  if (!std::filesystem::is_directory(f.model.model_dir))
    throw InputError(fmt::format("{}: model folder not found", f.model.model_dir));
  const ModelConfig cfg = load_config(f.model.model_dir);
  const int context = f.model.ctx > 0 ? f.model.ctx : cfg.max_position_embeddings;
  const int window = f.window.value_or(std::min(context, 512));
  if (window < 2 || window > context)
    throw UsageError(fmt::format("--ctx-window {}: must be in [2, context = {}]", window, context));
  const int stride = f.stride.value_or(std::max(1, window / 2));
  if (stride < 1 || stride >= window)
    throw UsageError(fmt::format("--stride {}: must be in [1, --ctx-window - 1 = {}] (windows must overlap so "
                                 "that every token is scored)",
                                 stride, window - 1));
  std::optional<Format> base_format;
  if (!f.kl_base.empty()) base_format = parse_flag_format("--kl-base", f.kl_base);
  warn_if_context_beyond_model(f.model.ctx, cfg);
  const ModelIdentity identity = model_identity(f.model.model_dir);

  for (const std::string& quant : quants) {
    // The KV cache only ever holds one window, so size it to the window, not the model's context.
    ModelFlags flags = f.model;
    flags.ctx = window;
    flags.quant = quant;
    Session s = open_session(flags, GenerationDefaults{});  // perplexity generates nothing
    const std::vector<int32_t> tokens = s.tokenizer->encode(text, true);
    if (tokens.size() < 2)
      throw InputError(
          fmt::format("{}: encodes to {} tokens; perplexity needs at least 2", f.text_file, tokens.size()));

    std::unique_ptr<Model> base;
    if (base_format) {
      LoadOptions opts = s.model->options();
      opts.format = *base_format;
      opts.progress = true;
      base = Model::load(flags.model_dir, *s.backend, opts);
      spdlog::info("loaded the base model as {}; weights {:.2f} MB", format_name(*base_format),
                   base->weight_bytes() / 1e6);
    }

    const bool tty = isatty(2) && !f.json;
    PerplexityResult r = compute_perplexity(*s.model, tokens, window, stride, base.get(), [&](int done, int total) {
      if (tty) std::fprintf(stderr, "\rwindow %d/%d", done, total);
    });
    if (tty) std::fputs("\r\033[K", stderr);

    const Model& m = *s.model;
    const std::string format(format_name(m.options().format));
    // Resident bytes per parameter: a tied embedding/head held once counts once.
    const double bits_per_param = 8.0 * double(m.weight_bytes()) / double(m.n_params());
    const double linear_bits = 8.0 * double(m.linear_bytes()) / double(m.linear_params());
    if (f.json) {
      nlohmann::ordered_json j;
      j["model"] = f.model.model_dir;
      j["text_file"] = f.text_file;
      j["quant"] = format;
      j["device"] = s.backend->name();
      j["tokens"] = tokens.size();
      j["tokens_scored"] = r.tokens_scored;
      j["windows"] = r.windows;
      j["ctx_window"] = window;
      j["stride"] = stride;
      j["mean_nll"] = r.mean_nll;
      j["perplexity"] = r.perplexity;
      j["weight_bytes"] = m.weight_bytes();
      j["n_params"] = m.n_params();
      j["bits_per_param"] = bits_per_param;
      j["linear_bits_per_param"] = linear_bits;
      if (r.has_base) {
        j["kl_base"] = std::string(format_name(*base_format));
        j["base_perplexity"] = r.base_perplexity;
        j["mean_kl"] = r.mean_kl;
        j["top1_agreement"] = r.top1_agreement;
      }
      j["provenance"] = provenance_record(identity, s.backend->name(), device_name(*s.backend, f.model.threads));
      // One line per format (JSON Lines), so a list of formats is a list of records.
      std::puts(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("model %s as %s (%.2f MB of weights; %.2f bits per parameter overall, %.3f in the linear layers)\n",
                  f.model.model_dir.c_str(), format.c_str(), m.weight_bytes() / 1e6, bits_per_param, linear_bits);
      std::printf("tokens scored: %lld of %zu (%d windows of %d tokens, stride %d)\n", (long long)r.tokens_scored,
                  tokens.size(), r.windows, window, stride);
      std::printf("mean NLL: %.6f nats/token\n", r.mean_nll);
      std::printf("perplexity: %.4f\n", r.perplexity);
      if (r.has_base) {
        const std::string b(format_name(*base_format));
        std::printf("base %s perplexity: %.4f\n", b.c_str(), r.base_perplexity);
        std::printf("mean KL(%s || %s): %.6g nats/token\n", b.c_str(), format.c_str(), r.mean_kl);
        std::printf("top-1 agreement with %s: %.2f%%\n", b.c_str(), 100.0 * r.top1_agreement);
      }
      if (quants.size() > 1) std::printf("\n");
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

void add_ppl_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<PplFlags>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity of a text file (sliding window), optionally KL vs a base format");
  add_model_flags(*cmd, flags->model);
  // --quant takes a list here, as bench and sweep take it; the single-format option is replaced.
  cmd->remove_option(cmd->get_option("--quant"));
  cmd->add_option("--quant", flags->quant_list,
                  "formats, comma-separated (e.g. bf16,nf4,int8; auto = f32 on the CPU, bf16 on CUDA); each is "
                  "loaded and scored in turn")
      ->capture_default_str();
  cmd->add_option("-f,--file", flags->text_file, "text to score (- = stdin), scored exactly as it is")->required();
  cmd->add_option("--ctx-window", flags->window, "tokens per window (default min(context, 512))");
  cmd->add_option("--stride", flags->stride, "tokens the window advances by, less than the window (default window/2)");
  cmd->add_option("--kl-base", flags->kl_base,
                  "also load the model in this format and report mean KL(base || quant) and top-1 agreement");
  cmd->add_flag("--json", flags->json, "print one JSON record per format (JSON Lines)");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = run_ppl(*flags);
  });
}

}  // namespace lowbit::cli
