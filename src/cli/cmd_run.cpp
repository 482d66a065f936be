// `lowbit run`: generate from one prompt, streaming text to stdout, logs to stderr.
#include <cstdio>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/kernel_stats.h"
#include "cli/provenance.h"
#include "cli/session.h"
#include "core/error.h"
#include "generate/generate.h"
#include "generate/stop_strings.h"

namespace lowbit::cli {

namespace {

struct RunFlags {
  ModelFlags model;
  SamplingFlags sampling;
  PromptSource prompt;
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
  // Flags are checked before anything is loaded, so a usage error costs nothing.
  validate_model_flags(f.model);
  const GenerationDefaults defaults = load_generation_defaults(f.model.model_dir);
  const SamplingParams sp = sampling_params(f.sampling, defaults);
  const int max_new = max_new_tokens(f.sampling, defaults);
  const PromptText prompt_text = read_prompt(f.prompt);
  const std::string& text = prompt_text.text;
  // An empty file or stdin is almost always a mistake (a failed redirect, a wrong path); BOS-only
  // generation is asked for with an explicit -p "".
  if (text.empty() && prompt_text.origin != "-p")
    throw InputError(fmt::format("{}: the prompt is empty (-p \"\" generates from BOS alone)", prompt_text.origin));
  Session s = open_session(f.model);
  std::vector<int32_t> prompt = s.tokenizer->encode(text, true);
  if (prompt.empty()) throw InputError("the prompt encodes to no tokens and the tokenizer adds no BOS");
  const int ctx = s.model->max_context();
  size_t truncated_from = 0;
  if (int(prompt.size()) >= ctx) {
    if (!f.truncate)
      throw InputError(fmt::format("the prompt has {} tokens but the context holds {} (use --ctx, or --truncate)",
                                   prompt.size(), ctx));
    truncated_from = prompt.size();
    prompt.erase(prompt.begin(), prompt.end() - (ctx - 1));  // keep the most recent tokens
    spdlog::warn("prompt truncated to its last {} tokens", prompt.size());
  }
  spdlog::info("seed {}, temperature {}, top-k {}, top-p {}, min-p {}, repeat-penalty {}, max-new-tokens {}", sp.seed,
               sp.temperature, sp.top_k, sp.top_p, sp.min_p, sp.repetition_penalty, max_new);

  GenerationRequest req;
  req.prompt = prompt;
  req.sampling = sp;
  req.max_new_tokens = max_new;
  req.stop_ids = s.stop_ids();
  req.logprobs = f.sampling.logprobs;

  StreamDecoder stream(*s.tokenizer);
  stream.prime(prompt);
  // What is printed passes through the stop-string matcher, so a stop string never reaches the
  // terminal; the run ends on the token that completes one.
  StopStringMatcher stops(f.sampling.stop);
  req.stop_after = [&stops](std::span<const int32_t>) { return stops.matched(); };
  auto print = [&](const std::string& piece) {
    if (!f.json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  if (!f.json && !f.no_echo) print(text);
  install_sigint_handler();
  KernelStats kernel_stats(s.model->config().n_layers, s.backend->name());
  GenerationResult r = generate(*s.model, req, [&](int32_t tok) {
    kernel_stats.on_token();
    print(stops.push(stream.push(tok)));
    return !interrupted();
  });
  if (!stops.matched()) {
    print(stops.push(stream.flush()));
    print(stops.flush());
  }
  if (!f.json) {
    std::fputc('\n', stdout);
  } else {
    std::string generated = continuation_text(*s.tokenizer, prompt, r.tokens);
    if (r.stop == StopReason::stop_string) generated = cut_at_stop(generated, f.sampling.stop);
    nlohmann::ordered_json j;
    j["prompt"] = text;
    j["text"] = generated;
    j["token_ids"] = r.tokens;
    if (req.logprobs) j["logprobs"] = r.logprobs;
    j["prompt_tokens"] = r.prompt_tokens;
    if (truncated_from) j["truncated_from_tokens"] = truncated_from;
    j["generated_tokens"] = r.tokens.size();
    j["stop_reason"] = stop_reason_name(r.stop);
    if (stops.matched()) j["stop_string"] = stops.match();
    j["quant"] = format_name(s.model->options().format);
    j["temperature"] = shortest_double(sp.temperature);
    j["top_k"] = sp.top_k;
    j["top_p"] = shortest_double(sp.top_p);
    j["min_p"] = shortest_double(sp.min_p);
    j["repetition_penalty"] = shortest_double(sp.repetition_penalty);
    j["max_new_tokens"] = max_new;
    j["seed"] = sp.seed;
    j["stop"] = f.sampling.stop;
    j["ttft_s"] = r.prefill_seconds;
    j["decode_s"] = r.decode_seconds;
    j["decode_tokens_per_s"] = r.decode_tokens_per_second();
    j["device"] = s.backend->name();
    j["provenance"] = provenance_record(model_identity(f.model.model_dir), s.backend->name(),
                                        device_name(*s.backend, f.model.threads));
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
  cmd->add_option("-p,--prompt", flags->prompt.prompt, "prompt text (-p \"\": generate from BOS alone)");
  cmd->add_option("-f,--file", flags->prompt.file,
                  "read the prompt from a file (- = stdin), minus one trailing newline; without -p/-f a piped "
                  "stdin is the prompt");
  cmd->add_flag("--json", flags->json,
                "print one JSON record (text, token ids, counts, timings, settings, provenance) instead of streaming");
  cmd->add_flag("--no-echo", flags->no_echo, "do not print the prompt before the generated text");
  cmd->add_flag("--truncate", flags->truncate, "keep the last tokens of a prompt longer than the context");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = run(*flags);
  });
}

}  // namespace lowbit::cli
