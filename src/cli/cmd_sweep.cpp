// `lowbit sweep`: generation over a grid of formats x prompts x sampling settings, one JSONL record
// per run with speed, memory and quality against bf16 (README "Batch and sweeps", "Study metrics").
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/session.h"
#include "core/error.h"
#include "core/progress.h"
#include "generate/generate.h"
#include "study/grid.h"
#include "study/host.h"
#include "study/jsonl.h"
#include "study/metrics.h"

namespace lowbit::cli {

namespace {

using nlohmann::json;
using Record = nlohmann::ordered_json;  // keys stay in the documented order

struct SweepFlags {
  ModelFlags model;
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::string quant = "bf16,nf4,fp4,fp4-dq,int8,W4A16,W8A8";
  std::string temperature = "0";
  std::string top_k = "50";
  std::string top_p = "1";
  std::string max_new_tokens = "128";
  std::string seed = "0";
  int repeats = 1;
  std::string output;
  bool resume = false;
};

struct Prompt {
  json id;
  std::string text;  // what the model reads: the prompt, or the messages rendered with the chat template
  std::vector<int32_t> tokens;
  json messages = nullptr;  // a chat record's messages (the template writes its own specials: no BOS added)
};

// .jsonl: one {"id": ..., "prompt": "..."} or {"id": ..., "messages": [{"role", "content"}...]} per
// line (messages are rendered with the model folder's chat template); anything else: one prompt
// per non-empty line, its id the 0-based index among the prompts.
std::vector<Prompt> read_prompt_file(const std::string& path, const std::string& model_dir) {
  std::vector<Prompt> out;
  std::optional<ChatTemplate> chat;  // read once, when the first chat record needs it
  if (std::filesystem::path(path).extension() == ".jsonl") {
    for (const study::JsonlRecord& r : study::read_jsonl(path, false)) {
      const std::string where = fmt::format("{}:{}", path, r.line);
      json id = r.value.value("id", json(out.size()));
      if (!id.is_string() && !id.is_number_integer())
        throw InputError(fmt::format("{}: \"id\" must be a string or an integer", where));
      auto prompt = r.value.find("prompt");
      auto messages = r.value.find("messages");
      if (prompt != r.value.end() && messages != r.value.end())
        throw InputError(fmt::format("{}: give \"prompt\" or \"messages\", not both", where));
      if (messages != r.value.end()) {
        const std::vector<ChatMessage> conv = parse_chat_messages(*messages, where);
        if (!chat) chat = ChatTemplate::from_model_dir(model_dir);
        out.push_back({id, chat->render(conv, true), {}, *messages});
        continue;
      }
      if (prompt == r.value.end() || !prompt->is_string())
        throw InputError(fmt::format("{}: \"prompt\" (a string) or \"messages\" is missing", where));
      out.push_back({id, prompt->get<std::string>(), {}});
    }
  } else {
    std::string text = read_text_file(path);
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) out.push_back({json(out.size()), line, {}});
      pos = end + 1;
    }
  }
  if (out.empty()) throw InputError(fmt::format("{}: no prompts in the file", path));
  return out;
}

// Mean log-probability the reference model assigns to `generated` after `prompt`, teacher-forced:
// one forward pass over prompt + generated[:-1], reading the log-softmax at each generated
// position. NaN when nothing was generated.
double reference_mean_logprob(Model& ref, const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated) {
  if (generated.empty()) return NAN;
  TokenBatch batch;
  std::vector<int32_t> fed = prompt;
  fed.insert(fed.end(), generated.begin(), generated.end() - 1);
  for (size_t i = 0; i < fed.size(); ++i) {
    batch.tokens.push_back(fed[i]);
    batch.positions.push_back(int32_t(i));
    batch.slots.push_back(0);
  }
  std::vector<int> rows;
  for (size_t i = 0; i < generated.size(); ++i) rows.push_back(int(prompt.size() + i) - 1);
  const size_t vocab = size_t(ref.config().vocab_size);
  std::vector<float> logits(rows.size() * vocab);
  ref.forward(batch, rows, logits.data());
  double sum = 0;
  for (size_t i = 0; i < generated.size(); ++i)
    sum += study::log_softmax_at(std::span<const float>(logits.data() + i * vocab, vocab), generated[i]);
  return sum / double(generated.size());
}

Record nullable(double v) { return std::isfinite(v) ? Record(v) : Record(nullptr); }

struct ReferenceRun {
  std::vector<int32_t> tokens;
  std::string text;
};

// What identifies one run of the grid in the runs file (for --resume): these fields of its
// record, as JSON text (numbers round-trip exactly through the file).
constexpr const char* kRunKeyFields[] = {"prompt_id",      "quant", "temperature", "top_k", "top_p",
                                         "max_new_tokens", "seed",  "repeat"};

std::string run_key(const json& run) {
  json key = json::array();
  for (const char* field : kRunKeyFields) key.push_back(run.at(field));
  return key.dump();
}

std::string run_key(const json& prompt_id, std::string_view quant, const study::SweepSetting& g) {
  return run_key(json{{"prompt_id", prompt_id}, {"quant", quant}, {"temperature", g.temperature},
                      {"top_k", g.top_k}, {"top_p", g.top_p}, {"max_new_tokens", g.max_new_tokens},
                      {"seed", g.seed}, {"repeat", g.repeat}});
}

// The finished runs of an earlier sweep into `path` (--resume), by run_key. A torn last line (a
// write cut by a kill) is cut off first. Runs of another model are refused: the file would mix them.
std::map<std::string, json> finished_runs(const std::string& path, const std::string& model_dir) {
  std::map<std::string, json> done;
  if (!std::filesystem::exists(path)) return done;
  if (size_t cut = study::truncate_torn_tail(path))
    spdlog::warn("{}: removed a torn last line ({} bytes) left by an interrupted run", path, cut);
  for (study::JsonlRecord& r : study::read_jsonl(path, false)) {
    const std::string where = fmt::format("{}:{}", path, r.line);
    auto require = [&](const char* key) {
      if (!r.value.contains(key)) throw InputError(fmt::format("{}: not a sweep run (no \"{}\")", where, key));
    };
    require("model");
    for (const char* key : kRunKeyFields) require(key);
    require("text");
    require("token_ids");
    const json& ids = r.value["token_ids"];
    if (!r.value["text"].is_string() || !ids.is_array() ||
        !std::all_of(ids.begin(), ids.end(), [](const json& t) {
          return t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() <= INT32_MAX;
        }))
      throw InputError(fmt::format("{}: \"text\" must be a string and \"token_ids\" a list of token ids", where));
    if (r.value["model"] != model_dir)
      throw InputError(fmt::format("{}: a run of model {}, not {} (resume with the same -m, or start a new file)",
                                   where, r.value["model"].dump(), model_dir));
    std::string key = run_key(r.value);
    done[std::move(key)] = std::move(r.value);
  }
  return done;
}

int sweep(const SweepFlags& f) {
  // Everything is checked before a model is loaded, so a typo costs nothing.
  validate_model_flags(f.model);
  if (f.output.empty()) throw UsageError("-o/--output: the runs file is required");
  if (f.prompts.empty() == f.prompts_file.empty())
    throw UsageError("give prompts with -p (repeatable) or --prompts FILE, exactly one of them");
  std::vector<Format> formats;
  for (const std::string& name : study::parse_name_list("--quant", f.quant)) {
    Format fmt_;
    try {
      fmt_ = parse_format(name);
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("--quant: {}", e.what()));
    }
    if (std::find(formats.begin(), formats.end(), fmt_) != formats.end())
      throw UsageError(fmt::format("--quant '{}': {} appears twice", f.quant, format_name(fmt_)));
    formats.push_back(fmt_);
  }
  // Quality is always measured against bf16, so bf16 runs first; when not asked for, its runs are
  // still written, marked "implicit_reference": true.
  const bool implicit_reference = std::find(formats.begin(), formats.end(), Format::BF16) == formats.end();
  formats.erase(std::remove(formats.begin(), formats.end(), Format::BF16), formats.end());
  formats.insert(formats.begin(), Format::BF16);

  study::SweepAxes axes;
  axes.temperature = study::parse_float_list("--temperature", f.temperature);
  axes.top_k = study::parse_int_list("--top-k", f.top_k);
  axes.top_p = study::parse_float_list("--top-p", f.top_p);
  axes.max_new_tokens = study::parse_int_list("--max-new-tokens", f.max_new_tokens);
  axes.seed = study::parse_int_list("--seed", f.seed);
  axes.repeats = f.repeats;
  study::validate_axes(axes);
  const std::vector<study::SweepSetting> settings = study::expand_grid(axes);

  std::vector<Prompt> prompts;
  if (!f.prompts_file.empty()) {
    prompts = read_prompt_file(f.prompts_file, f.model.model_dir);
  } else {
    for (const std::string& p : f.prompts) prompts.push_back({json(prompts.size()), p, {}});
  }

  const size_t runs_per_format = prompts.size() * settings.size();
  spdlog::info("sweep: {} formats x {} prompts x {} settings = {} runs -> {}", formats.size(), prompts.size(),
               settings.size(), formats.size() * runs_per_format, f.output);
  const std::map<std::string, json> done = f.resume ? finished_runs(f.output, f.model.model_dir)
                                                    : std::map<std::string, json>{};
  // Runs still to do, per format (the bf16 reference of a finished run comes from the file).
  std::vector<size_t> pending(formats.size(), 0);
  for (size_t fi = 0; fi < formats.size(); ++fi)
    for (const Prompt& p : prompts)
      for (const study::SweepSetting& g : settings)
        pending[fi] += !done.count(run_key(p.id, format_name(formats[fi]), g));
  const size_t total_pending = std::accumulate(pending.begin(), pending.end(), size_t(0));
  if (f.resume)
    spdlog::info("resume: {} runs already in {}, {} to go", formats.size() * runs_per_format - total_pending,
                 f.output, total_pending);
  study::JsonlAppender out(f.output, !f.resume);
  if (total_pending == 0) return 0;
  install_sigint_handler();
  study::treat_sigterm_as_sigint();

  ModelFlags ref_flags = f.model;
  ref_flags.quant = "bf16";
  // The bf16 model stays loaded for the whole sweep: it is the bf16 format's own runs and the
  // teacher-forcing scorer of every other format's output.
  Session ref = open_session(ref_flags);
  for (Prompt& p : prompts) {
    p.tokens = ref.tokenizer->encode(p.text, p.messages.is_null());
    if (p.tokens.empty()) throw InputError(fmt::format("prompt {}: encodes to no tokens", p.id.dump()));
    if (int(p.tokens.size()) >= ref.model->max_context())
      throw InputError(fmt::format("prompt {}: {} tokens but the context holds {} (use --ctx)", p.id.dump(),
                                   p.tokens.size(), ref.model->max_context()));
  }
  std::vector<ReferenceRun> reference(runs_per_format);

  Progress progress("sweep bf16", total_pending, "runs");
  for (size_t fi = 0; fi < formats.size(); ++fi) {
    const Format format = formats[fi];
    std::optional<Session> quantized;
    if (format != Format::BF16 && pending[fi] > 0) {
      ModelFlags mf = f.model;
      mf.quant = std::string(format_name(format));
      progress.clear();
      quantized.emplace(open_session(mf));
    }
    Session& s = quantized ? *quantized : ref;
    progress.set_label(fmt::format("sweep {}", format_name(format)));
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
      for (size_t si = 0; si < settings.size(); ++si) {
        const study::SweepSetting& g = settings[si];
        ReferenceRun& ref_run = reference[pi * settings.size() + si];
        if (auto prior = done.find(run_key(prompts[pi].id, format_name(format), g)); prior != done.end()) {
          if (format == Format::BF16)
            ref_run = {prior->second["token_ids"].get<std::vector<int32_t>>(), prior->second["text"].get<std::string>()};
          continue;
        }
        GenerationRequest req;
        req.prompt = prompts[pi].tokens;
        req.sampling.temperature = float(g.temperature);
        req.sampling.top_k = g.top_k;
        req.sampling.top_p = float(g.top_p);
        req.sampling.min_p = 0;
        req.sampling.repetition_penalty = 1;
        req.sampling.seed = g.seed;
        req.max_new_tokens = g.max_new_tokens;
        req.stop_ids = s.stop_ids();
        GenerationResult r = generate(*s.model, req, [](int32_t) { return !interrupted(); });
        if (r.stop == StopReason::interrupted) {
          progress.clear();
          spdlog::warn("interrupted; {} holds every finished run", f.output);
          return int(ExitCode::interrupted);
        }
        const std::string text = s.tokenizer->decode(r.tokens, true);
        if (format == Format::BF16) ref_run = {r.tokens, text};
        study::TokenAgreement agree = study::token_agreement(r.tokens, ref_run.tokens);

        Record j;
        j["model"] = f.model.model_dir;
        j["prompt_id"] = prompts[pi].id;
        j["prompt"] = prompts[pi].text;
        if (!prompts[pi].messages.is_null()) j["messages"] = Record::parse(prompts[pi].messages.dump());
        j["quant"] = format_name(format);
        j["implicit_reference"] = format == Format::BF16 && implicit_reference;
        j["temperature"] = g.temperature;
        j["top_k"] = g.top_k;
        j["top_p"] = g.top_p;
        j["max_new_tokens"] = g.max_new_tokens;
        j["seed"] = g.seed;
        j["base_seed"] = g.base_seed;
        j["repeat"] = g.repeat;
        j["text"] = text;
        j["token_ids"] = r.tokens;
        j["prompt_tokens"] = r.prompt_tokens;
        j["generated_tokens"] = r.tokens.size();
        j["ttft_s"] = r.prefill_seconds;
        j["decode_tokens_per_s"] = r.decode_tokens_per_second();
        j["peak_memory_bytes"] = s.backend->peak_memory_bytes();
        j["peak_host_rss_bytes"] = study::peak_host_rss_bytes();
        j["weight_bytes"] = s.model->weight_bytes();
        j["load_seconds"] = s.load_seconds;
        j["stop_reason"] = stop_reason_name(r.stop);
        j["device"] = s.backend->name();
        j["token_agreement"] = agree.fraction;
        j["first_divergence"] = agree.first_divergence < 0 ? Record(nullptr) : Record(agree.first_divergence);
        j["rouge_l_f1"] = study::rouge_l_f1(ref_run.text, text);
        j["distinct_1"] = study::distinct_n(r.tokens, 1);
        j["distinct_2"] = study::distinct_n(r.tokens, 2);
        j["ref_mean_logprob"] = nullable(reference_mean_logprob(*ref.model, req.prompt, r.tokens));
        out.append(j);
        progress.advance();
      }
    }
  }
  progress.finish();
  return 0;
}

}  // namespace

void add_sweep_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<SweepFlags>();
  CLI::App* cmd = app.add_subcommand("sweep", "generate over a grid of formats, prompts and sampling settings");
  add_model_flags(*cmd, flags->model);
  // --quant takes a list here; the single-format option of add_model_flags is replaced.
  cmd->remove_option(cmd->get_option("--quant"));
  cmd->add_option("--quant", flags->quant,
                  "formats, comma-separated; each loaded and quantized once, bf16 first (added as the "
                  "quality reference when missing)")
      ->capture_default_str();
  cmd->add_option("-p,--prompt", flags->prompts, "a prompt (repeat for several)");
  cmd->add_option("--prompts", flags->prompts_file,
                  "prompt file: .jsonl with {\"id\", \"prompt\"} or {\"id\", \"messages\": [{\"role\", \"content\"}...]} (rendered "
                  "with the model's chat template) per line, else one prompt per line");
  const char* list_help = "comma-separated values and/or start:stop:step ranges (stop included)";
  cmd->add_option("--temperature", flags->temperature, fmt::format("temperatures: {}", list_help))
      ->capture_default_str();
  cmd->add_option("--top-k", flags->top_k, fmt::format("top-k values (0 = off): {}", list_help))
      ->capture_default_str();
  cmd->add_option("--top-p", flags->top_p, fmt::format("top-p values: {}", list_help))->capture_default_str();
  cmd->add_option("-n,--max-new-tokens", flags->max_new_tokens, fmt::format("generation lengths: {}", list_help))
      ->capture_default_str();
  cmd->add_option("--seed", flags->seed, fmt::format("base seeds: {}", list_help))->capture_default_str();
  cmd->add_option("--repeats", flags->repeats, "runs per setting; repeat r uses seed + r")->capture_default_str();
  cmd->add_option("-o,--output", flags->output,
                  "runs file (JSONL, one line per finished run; overwritten unless --resume)");
  cmd->add_flag("--resume", flags->resume,
                "continue the runs file: runs already in it (same prompt id, format and settings) are skipped");
  cmd->callback([flags, &exit_code] { exit_code = sweep(*flags); });
}

}  // namespace lowbit::cli
