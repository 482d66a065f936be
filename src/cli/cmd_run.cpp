// `lowbit run`: generate from one prompt, streaming text to stdout, logs to stderr. With --chat
// the prompt is a user turn in the model's chat template; with no prompt and a terminal on stdin
// (or --interactive) it is a multi-turn chat: Ctrl-C stops the current answer, Ctrl-D quits.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "chat/chat_template.h"
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
  bool chat = false;
  bool interactive = false;
  std::string system;
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

enum class LineRead { line, eof, interrupted };

// One line from stdin with read(2), so a Ctrl-C at the prompt (EINTR) is seen instead of
// being retried inside stdio.
LineRead read_line(std::string& line) {
  line.clear();
  for (;;) {
    char c;
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n == 1) {
      if (c == '\n') return LineRead::line;
      line += c;
      continue;
    }
    if (n == 0) return line.empty() ? LineRead::eof : LineRead::line;
    if (errno == EINTR) return LineRead::interrupted;
    throw InputError(std::string("stdin: read failed (") + std::strerror(errno) + ")");
  }
}

// The conversation rendered with the generation prompt and encoded as transformers'
// apply_chat_template(tokenize=True) does (the template writes its own BOS, so none is added).
std::vector<int32_t> chat_prompt(const ChatTemplate& tmpl, const Tokenizer& tok, const std::vector<ChatMessage>& conv,
                                 std::string* rendered) {
  const std::string text = tmpl.render(conv, true);
  if (rendered) *rendered = text;
  return tok.encode(text, false);
}

struct ChatAnswer {
  GenerationResult result;
  std::string text;  // the answer, special tokens (the stop id) left out
};

ChatAnswer answer(Session& s, const std::vector<int32_t>& prompt, const SamplingParams& sp, int max_new,
                  bool stream_out) {
  GenerationRequest req;
  req.prompt = prompt;
  req.sampling = sp;
  req.max_new_tokens = max_new;
  req.stop_ids = s.stop_ids();
  StreamDecoder stream(*s.tokenizer);
  ChatAnswer a;
  a.result = generate(*s.model, req, [&](int32_t tok) {
    std::string piece = stream.push(tok);
    a.text += piece;
    if (stream_out && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return !interrupted();
  });
  std::string tail = stream.flush();
  a.text += tail;
  if (stream_out) {
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  return a;
}

int run_chat(const RunFlags& f) {
  if (f.prompt.prompt && !f.prompt.file.empty()) throw UsageError("give the prompt with -p or -f, not both");
  validate_model_flags(f.model);
  const GenerationDefaults defaults = load_generation_defaults(f.model.model_dir);
  const SamplingParams sp = sampling_params(f.sampling, defaults);
  const int max_new = max_new_tokens(f.sampling, defaults);
  const bool have_prompt = f.prompt.prompt.has_value() || !f.prompt.file.empty();
  const bool interactive = f.interactive || (!have_prompt && !f.json && isatty(STDIN_FILENO));
  if (interactive && f.json) throw UsageError("--json gives one record; it cannot be used with an interactive chat");
  // The template is checked before the model is loaded, so an unknown one costs nothing.
  const ChatTemplate tmpl = ChatTemplate::from_model_dir(f.model.model_dir);
  // -p, -f FILE or -f - (one trailing newline dropped, as for run); with neither, a pipe on stdin
  // is the one user turn.
  std::string first;
  if (have_prompt || !interactive) {
    PromptSource src = f.prompt;
    if (!have_prompt) src.file = "-";
    const PromptText t = read_prompt(src);
    if (t.text.empty() && t.origin != "-p") throw InputError(fmt::format("{}: the prompt is empty", t.origin));
    first = t.text;
  }
  Session s = open_session(f.model, defaults);
  spdlog::info("chat template: {}; seed {}, temperature {}, top-k {}, top-p {}", chat_family_name(tmpl.family()),
               sp.seed, sp.temperature, sp.top_k, sp.top_p);
  std::vector<ChatMessage> conv;
  if (!f.system.empty()) conv.push_back({"system", f.system});
  const int ctx = s.model->max_context();
  install_sigint_handler();

  if (!interactive) {
    conv.push_back({"user", first});
    std::string rendered;
    std::vector<int32_t> prompt = chat_prompt(tmpl, *s.tokenizer, conv, &rendered);
    if (const std::string problem = prompt_problem(prompt.size(), ctx); !problem.empty()) throw InputError(problem);
    ChatAnswer a = answer(s, prompt, sp, max_new, !f.json);
    const GenerationResult& r = a.result;
    if (f.json) {
      nlohmann::json j;
      j["messages"] = nlohmann::json::array();
      for (const ChatMessage& m : conv) j["messages"].push_back({{"role", m.role}, {"content", m.content}});
      j["prompt"] = rendered;
      j["text"] = a.text;
      j["token_ids"] = r.tokens;
      j["prompt_tokens"] = r.prompt_tokens;
      j["generated_tokens"] = r.tokens.size();
      j["stop_reason"] = stop_reason_name(r.stop);
      j["ttft_s"] = r.prefill_seconds;
      j["decode_tokens_per_s"] = r.decode_tokens_per_second();
      j["seed"] = sp.seed;
      j["quant"] = format_name(s.model->options().format);
      j["device"] = s.backend->name();
      std::puts(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      std::fflush(stdout);
    }
    spdlog::info("prompt {} tokens; generated {} tokens, decode {:.1f} tokens/s; stop: {}", r.prompt_tokens,
                 r.tokens.size(), r.decode_tokens_per_second(), stop_reason_name(r.stop));
    return r.stop == StopReason::interrupted ? int(ExitCode::interrupted) : 0;
  }

  spdlog::info("interactive chat: type a message and Enter; Ctrl-C stops an answer, Ctrl-D quits");
  bool pending_first = have_prompt;
  for (int turn = 0;; ++turn) {
    std::string line;
    if (pending_first) {
      line = first;
      pending_first = false;
    } else {
      std::fputs("> ", stdout);
      std::fflush(stdout);
      const LineRead got = read_line(line);
      if (got == LineRead::eof) {
        std::fputc('\n', stdout);
        break;
      }
      if (got == LineRead::interrupted) {
        clear_interrupted();
        std::fputc('\n', stdout);
        continue;
      }
    }
    if (line.empty()) continue;
    conv.push_back({"user", line});
    std::vector<int32_t> prompt = chat_prompt(tmpl, *s.tokenizer, conv, nullptr);
    // Too long for the context: forget the oldest turns (a system message stays).
    const size_t keep = !conv.empty() && conv[0].role == "system" ? 1 : 0;
    while (int(prompt.size()) >= ctx && conv.size() > keep + 1) {
      conv.erase(conv.begin() + ptrdiff_t(keep));
      prompt = chat_prompt(tmpl, *s.tokenizer, conv, nullptr);
    }
    if (int(prompt.size()) >= ctx) {
      spdlog::warn("that message alone has {} tokens, more than the context holds ({}); not sent", prompt.size(), ctx);
      conv.pop_back();
      continue;
    }
    SamplingParams turn_sp = sp;
    turn_sp.seed = sp.seed + uint64_t(turn);  // a fresh draw each turn, still reproducible from --seed
    ChatAnswer a = answer(s, prompt, turn_sp, max_new, true);
    spdlog::info("turn {}: prompt {} tokens, generated {} tokens, decode {:.1f} tokens/s; stop: {}", turn + 1,
                 a.result.prompt_tokens, a.result.tokens.size(), a.result.decode_tokens_per_second(),
                 stop_reason_name(a.result.stop));
    if (a.result.stop == StopReason::interrupted) {
      clear_interrupted();
      spdlog::info("answer stopped");
    }
    conv.push_back({"assistant", a.text});
  }
  return 0;
}

int run(const RunFlags& f) {
  if (f.chat || f.interactive) return run_chat(f);
  if (!f.system.empty()) throw UsageError("--system needs --chat");
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
  Session s = open_session(f.model, defaults);
  std::vector<int32_t> prompt = s.tokenizer->encode(text, true);
  const int ctx = s.model->max_context();
  size_t truncated_from = 0;
  if (f.truncate && int(prompt.size()) >= ctx) {
    truncated_from = prompt.size();
    prompt.erase(prompt.begin(), prompt.end() - (ctx - 1));  // keep the most recent tokens
    spdlog::warn("prompt truncated to its last {} tokens", prompt.size());
  }
  // Checked before anything is printed (generate() checks again).
  if (const std::string problem = prompt_problem(prompt.size(), ctx, "use --ctx, or --truncate"); !problem.empty())
    throw InputError(problem);
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
  cmd->add_flag("--chat", flags->chat,
                "format the prompt as a user turn in the model's chat template (tokenizer_config.json) with the "
                "assistant prompt; with no -p/-f and a terminal on stdin, chat interactively (Ctrl-C stops an answer, "
                "Ctrl-D quits)");
  cmd->add_option("--system", flags->system, "system message of the chat (with --chat)");
  cmd->add_flag("--interactive", flags->interactive,
                "multi-turn chat reading one message per line from stdin even when it is not a terminal (implies --chat)");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = run(*flags);
  });
}

}  // namespace lowbit::cli
