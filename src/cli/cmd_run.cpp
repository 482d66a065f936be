// `lowbit run`: generate from one prompt, streaming text to stdout, logs to stderr.
#include <cstdio>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/kernel_stats.h"
#include "cli/session.h"
#include "core/error.h"
#include "generate/generate.h"

namespace lowbit::cli {

namespace {

struct RunFlags {
  ModelFlags model;
  SamplingFlags sampling;
  std::string prompt;
  std::string prompt_file;
  bool json = false;
  bool no_echo = false;
  bool truncate = false;
};

// The generated text as transformers' text-generation pipeline gives it: decode(prompt +
// generated) minus decode(prompt), so the first word keeps the space decode gives it in context.
// This is also exactly what the stream printed.
std::string continuation_text(const Tokenizer& tok, const std::vector<int32_t>& prompt,
                              const std::vector<int32_t>& generated) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string full = tok.decode(all, true), head = tok.decode(prompt, true);
  if (full.compare(0, head.size(), head) == 0) return full.substr(head.size());
  return tok.decode(generated, true);
}

int run(const RunFlags& f) {
  if (!f.prompt.empty() && !f.prompt_file.empty()) throw UsageError("give the prompt with -p or -f, not both");
  // No prompt at all: generate from BOS alone.
  // Flags are checked before anything is loaded, so a usage error costs nothing.
  validate_model_flags(f.model);
  SamplingParams sp = sampling_params(f.sampling, load_generation_defaults(f.model.model_dir));
  std::string text = f.prompt_file.empty() ? f.prompt : read_text_file(f.prompt_file);
  Session s = open_session(f.model);
  std::vector<int32_t> prompt = s.tokenizer->encode(text, true);
  if (prompt.empty()) throw InputError("the prompt encodes to no tokens and the tokenizer adds no BOS");
  const int ctx = s.model->max_context();
  if (int(prompt.size()) >= ctx) {
    if (!f.truncate)
      throw InputError(fmt::format("the prompt has {} tokens but the context holds {} (use --ctx, or --truncate)",
                                   prompt.size(), ctx));
    prompt.erase(prompt.begin(), prompt.end() - (ctx - 1));  // keep the most recent tokens
    spdlog::warn("prompt truncated to its last {} tokens", prompt.size());
  }
  spdlog::info("seed {}, temperature {}, top-k {}, top-p {}, min-p {}, repeat-penalty {}", sp.seed, sp.temperature,
               sp.top_k, sp.top_p, sp.min_p, sp.repetition_penalty);

  GenerationRequest req;
  req.prompt = prompt;
  req.sampling = sp;
  req.max_new_tokens = f.sampling.max_new_tokens;
  req.stop_ids = s.stop_ids();

  StreamDecoder stream(*s.tokenizer);
  stream.prime(prompt);
  if (!f.json && !f.no_echo) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
  }
  install_sigint_handler();
  KernelStats kernel_stats(s.model->config().n_layers, s.backend->name());
  GenerationResult r = generate(*s.model, req, [&](int32_t tok) {
    kernel_stats.on_token();
    std::string piece = stream.push(tok);
    if (!f.json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return !interrupted();
  });
  std::string tail = stream.flush();
  if (!f.json) {
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    nlohmann::json j;
    j["prompt"] = text;
    j["text"] = continuation_text(*s.tokenizer, prompt, r.tokens);
    j["token_ids"] = r.tokens;
    j["prompt_tokens"] = r.prompt_tokens;
    j["generated_tokens"] = r.tokens.size();
    j["stop_reason"] = stop_reason_name(r.stop);
    j["time_to_first_token_s"] = r.prefill_seconds;
    j["decode_seconds"] = r.decode_seconds;
    j["decode_tokens_per_s"] = r.decode_tokens_per_second();
    j["seed"] = sp.seed;
    j["quant"] = format_name(s.model->options().format);
    j["device"] = s.backend->name();
    std::puts(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  std::fflush(stdout);
  spdlog::info("prompt {} tokens, first token after {:.1f} ms; generated {} tokens, decode {:.1f} tokens/s; stop: {}",
               r.prompt_tokens, r.prefill_seconds * 1e3, r.tokens.size(), r.decode_tokens_per_second(),
               stop_reason_name(r.stop));
  kernel_stats.report();
  return r.stop == StopReason::interrupted ? int(ExitCode::interrupted) : 0;
}

}  // namespace

void add_run_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "generate text from a prompt");
  add_model_flags(*cmd, flags->model);
  add_sampling_flags(*cmd, flags->sampling);
  cmd->add_option("-p,--prompt", flags->prompt, "prompt text");
  cmd->add_option("-f,--file", flags->prompt_file, "read the prompt from a file");
  cmd->add_flag("--json", flags->json, "print one JSON record (text, token ids, counts, timings) instead of streaming");
  cmd->add_flag("--no-echo", flags->no_echo, "do not print the prompt before the generated text");
  cmd->add_flag("--truncate", flags->truncate, "keep the last tokens of a prompt longer than the context");
  cmd->callback([flags, &exit_code] { exit_code = run(*flags); });
}

}  // namespace lowbit::cli
