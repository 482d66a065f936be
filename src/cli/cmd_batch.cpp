// `lowbit batch`: generate for every record of a JSONL file, several sequences decoded at once,
// appending one result line per finished record; --resume continues a killed run, --shard splits
// the input across jobs (README "Batch and sweeps").
#include <filesystem>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/session.h"
#include "cli/suggest.h"
#include "core/error.h"
#include "core/progress.h"
#include "generate/stop_strings.h"
#include "study/batch_generate.h"
#include "study/host.h"
#include "study/jsonl.h"

namespace lowbit::cli {

namespace {

using nlohmann::json;
using Record = nlohmann::ordered_json;  // keys stay in the documented order

struct BatchFlags {
  ModelFlags model;
  SamplingFlags sampling;
  std::string input, output, shard;
  bool resume = false;
  bool truncate = false;
  int batch_size = 4;
};

// Every key an input record may have; anything else is refused (a typo such as "temprature"
// would otherwise silently fall back to the flag's value).
const std::vector<std::string> kRecordKeys = {"id",    "prompt", "messages",       "temperature",        "top_k",
                                              "top_p", "min_p",  "seed",           "max_new_tokens",     "repetition_penalty",
                                              "stop"};

// One input record with its resolved settings.
struct Job {
  json id;
  size_t line = 0;
  std::string prompt;  // the record's prompt, or its messages rendered with the chat template
  GenerationRequest req;
  std::vector<std::string> stop;
  size_t truncated_from = 0;  // prompt tokens before --truncate cut it (0: not cut)
  json messages = nullptr;    // a chat record's messages (no BOS is added: the template writes its own)
};

// Per-record settings override the flags; a bad value is the input file's fault, so it is an
// InputError naming file and line.
void apply_record_settings(const json& rec, const std::string& where, Job& job) {
  GenerationRequest& req = job.req;
  for (const auto& [key, value] : rec.items())
    if (std::find(kRecordKeys.begin(), kRecordKeys.end(), key) == kRecordKeys.end())
      throw InputError(fmt::format("{}: unknown key \"{}\"{} (known: id, prompt, messages, temperature, top_k, top_p, min_p, "
                                   "repetition_penalty, max_new_tokens, seed, stop)",
                                   where, key, did_you_mean(key, kRecordKeys)));
  auto number = [&](const char* key) -> std::optional<double> {
    auto it = rec.find(key);
    if (it == rec.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) throw InputError(fmt::format("{}: \"{}\" must be a number", where, key));
    return it->get<double>();
  };
  auto integer = [&](const char* key) -> std::optional<long long> {
    auto it = rec.find(key);
    if (it == rec.end() || it->is_null()) return std::nullopt;
    if (!it->is_number_integer()) throw InputError(fmt::format("{}: \"{}\" must be an integer", where, key));
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
      throw InputError(fmt::format("{}: \"{}\" is too large", where, key));
    return it->get<long long>();
  };
  if (auto v = number("temperature")) req.sampling.temperature = float(*v);
  if (auto v = integer("top_k")) {
    if (*v < 0 || *v > 1000000000) throw InputError(fmt::format("{}: \"top_k\" must be from 0 to 1e9", where));
    req.sampling.top_k = int(*v);
  }
  if (auto v = number("top_p")) req.sampling.top_p = float(*v);
  if (auto v = number("min_p")) req.sampling.min_p = float(*v);
  if (auto v = number("repetition_penalty")) req.sampling.repetition_penalty = float(*v);
  if (auto it = rec.find("seed"); it != rec.end() && !it->is_null()) {
    // The full seed range, as --seed takes it (a uint64 JSON number).
    if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<int64_t>() < 0))
      throw InputError(fmt::format("{}: \"seed\" must be an integer from 0 to {}", where, UINT64_MAX));
    req.sampling.seed = it->get<uint64_t>();
  }
  if (auto v = integer("max_new_tokens")) {
    if (*v < 0 || *v > 1000000000) throw InputError(fmt::format("{}: \"max_new_tokens\" must be >= 0", where));
    req.max_new_tokens = int(*v);
  }
  if (auto it = rec.find("stop"); it != rec.end() && !it->is_null()) {
    // A string or a list of strings, replacing the --stop flags for this record.
    std::vector<std::string> stop;
    if (it->is_string()) {
      stop.push_back(it->get<std::string>());
    } else if (it->is_array() && std::all_of(it->begin(), it->end(), [](const json& s) { return s.is_string(); })) {
      stop = it->get<std::vector<std::string>>();
    } else {
      throw InputError(fmt::format("{}: \"stop\" must be a string or a list of strings", where));
    }
    for (const std::string& s : stop)
      if (s.empty()) throw InputError(fmt::format("{}: \"stop\" holds an empty string", where));
    job.stop = std::move(stop);
  }
  try {
    validate(req.sampling);
  } catch (const UsageError& e) {
    throw InputError(fmt::format("{}: {}", where, e.what()));
  }
}

int batch(const BatchFlags& f) {
  validate_model_flags(f.model);
  if (f.input.empty()) throw UsageError("--input: the prompts file is required");
  if (f.output.empty()) throw UsageError("-o/--output: the results file is required");
  if (f.batch_size < 1 || f.batch_size > 1024) throw UsageError(fmt::format("--batch-size {}: must be 1 to 1024", f.batch_size));
  const Shard shard = parse_shard(f.shard);
  namespace fs = std::filesystem;
  if (!f.resume && fs::exists(f.output) && fs::file_size(f.output) > 0)
    throw UsageError(fmt::format("-o/--output {}: the file exists (--resume continues it; remove it to start over)",
                                 f.output));
  const GenerationDefaults generation = load_generation_defaults(f.model.model_dir);
  const SamplingParams defaults = sampling_params(f.sampling, generation);
  const int default_max_new = max_new_tokens(f.sampling, generation);
  // --seed N: every record draws with N; --seed -1: with one random seed (logged); no --seed: each
  // record with its own index, so reruns reproduce.
  const bool seed_given = !f.sampling.seed.empty();
  if (f.sampling.seed == "-1") spdlog::info("--seed -1: every record uses the random seed {}", defaults.seed);

  // Ids already done (--resume), error records included. A torn last line is a write cut by a
  // kill: cut it off first.
  std::set<std::string> done;
  if (f.resume && fs::exists(f.output)) {
    if (size_t cut = study::truncate_torn_tail(f.output))
      spdlog::warn("{}: removed a torn last line ({} bytes) left by an interrupted run", f.output, cut);
    for (const study::JsonlRecord& r : study::read_jsonl(f.output, false)) {
      auto id = r.value.find("id");
      if (id == r.value.end()) throw InputError(fmt::format("{}:{}: a result without \"id\"", f.output, r.line));
      done.insert(id->dump());
    }
  }

  std::vector<Job> jobs;
  std::optional<ChatTemplate> chat;  // read once, when the first chat record needs it
  std::set<std::string> seen;
  size_t index = 0, skipped = 0;
  for (const study::JsonlRecord& r : study::read_jsonl(f.input, false)) {
    const std::string where = fmt::format("{}:{}", f.input, r.line);
    auto id = r.value.find("id");
    if (id == r.value.end() || !(id->is_string() || id->is_number_integer()))
      throw InputError(fmt::format("{}: \"id\" (a string or an integer) is missing", where));
    if (!seen.insert(id->dump()).second) throw InputError(fmt::format("{}: id {} appears twice", where, id->dump()));
    auto prompt = r.value.find("prompt");
    auto messages = r.value.find("messages");
    if (prompt != r.value.end() && messages != r.value.end())
      throw InputError(fmt::format("{}: give \"prompt\" or \"messages\", not both", where));
    std::string prompt_text;
    if (messages != r.value.end()) {
      const std::vector<ChatMessage> conv = parse_chat_messages(*messages, where);
      if (!chat) chat = ChatTemplate::from_model_dir(f.model.model_dir);
      prompt_text = chat->render(conv, true);
    } else if (prompt == r.value.end() || !prompt->is_string()) {
      throw InputError(fmt::format("{}: \"prompt\" (a string) or \"messages\" is missing", where));
    } else {
      prompt_text = prompt->get<std::string>();
    }
    // Shards take records by their index in the whole file, so every job sees the same split.
    const size_t record_index = index++;
    Job job{*id, r.line, prompt_text, {}, f.sampling.stop, 0,
            messages != r.value.end() ? *messages : json(nullptr)};
    job.req.sampling = defaults;
    // Without --seed or a per-record seed, the record's index is its seed, so a rerun or a
    // resumed run reproduces the same text.
    if (!seed_given) job.req.sampling.seed = record_index;
    job.req.max_new_tokens = default_max_new;
    job.req.logprobs = f.sampling.logprobs;
    apply_record_settings(r.value, where, job);  // every record is checked, in every shard
    if (!shard.takes(record_index)) continue;
    if (done.count(id->dump())) {
      ++skipped;
      continue;
    }
    jobs.push_back(std::move(job));
  }
  if (f.resume) spdlog::info("resume: {} records already in {}, {} to go", skipped, f.output, jobs.size());
  // The output is opened (created) before the model loads, so an unwritable path costs nothing.
  study::JsonlAppender out(f.output, false);
  if (index == 0) {
    spdlog::warn("{}: no records; {} is empty", f.input, f.output);
    return 0;
  }
  if (jobs.empty()) {
    spdlog::info("nothing to do");
    return 0;
  }

  Session s = open_session(f.model, generation, f.batch_size);
  const std::vector<int32_t> stop_ids = s.stop_ids();
  const std::string quant(format_name(s.model->options().format));
  const ModelIdentity identity = model_identity(f.model.model_dir);
  const std::string device = device_name(*s.backend, f.model.threads);
  auto provenance = [&] { return provenance_record(identity, s.backend->name(), device); };

  // A prompt that cannot run (longer than the context without --truncate, no tokens) gets an
  // error record and the rest go on; --resume counts it as done, like any other record.
  std::vector<size_t> runnable;  // indices into jobs
  size_t errors = 0;
  const int ctx = s.model->max_context();
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& job = jobs[i];
    job.req.prompt = s.tokenizer->encode(job.prompt, job.messages.is_null());
    job.req.stop_ids = stop_ids;
    if (f.truncate && int(job.req.prompt.size()) >= ctx) {
      job.truncated_from = job.req.prompt.size();
      job.req.prompt.erase(job.req.prompt.begin(), job.req.prompt.end() - (ctx - 1));
    }
    const std::string error = prompt_problem(job.req.prompt.size(), ctx, "use --ctx, or --truncate");
    if (!error.empty()) {
      spdlog::warn("{}:{}: {}; wrote an error record", f.input, job.line, error);
      Record j;
      j["id"] = job.id;
      j["prompt"] = job.prompt;
      if (!job.messages.is_null()) j["messages"] = Record::parse(job.messages.dump());
      j["error"] = error;
      j["stop_reason"] = "error";
      j["quant"] = quant;
      j["device"] = s.backend->name();
      j["provenance"] = provenance();
      out.append(j);
      ++errors;
      continue;
    }
    job.req.stop_after = stop_after_strings(*s.tokenizer, job.req.prompt, job.stop);
    runnable.push_back(i);
  }
  std::vector<GenerationRequest> requests;
  for (size_t i : runnable) requests.push_back(jobs[i].req);

  install_sigint_handler();
  study::treat_sigterm_as_sigint();
  Progress progress("batch", requests.size(), "records");
  bool finished = study::generate_batched(
      *s.model, requests,
      [&](size_t k, const GenerationResult& r) {
        const Job& job = jobs[runnable[k]];
        const GenerationRequest& req = requests[k];
        std::string text = s.tokenizer->decode(r.tokens, true);
        if (r.stop == StopReason::stop_string) text = cut_at_stop(text, job.stop);
        Record j;
        j["id"] = job.id;
        j["prompt"] = job.prompt;
        if (!job.messages.is_null()) j["messages"] = Record::parse(job.messages.dump());
        j["text"] = text;
        j["token_ids"] = r.tokens;
        if (req.logprobs) j["logprobs"] = r.logprobs;
        j["prompt_tokens"] = r.prompt_tokens;
        if (job.truncated_from) j["truncated_from_tokens"] = job.truncated_from;
        j["generated_tokens"] = r.tokens.size();
        j["stop_reason"] = stop_reason_name(r.stop);
        j["quant"] = quant;
        j["temperature"] = shortest_double(req.sampling.temperature);
        j["top_k"] = req.sampling.top_k;
        j["top_p"] = shortest_double(req.sampling.top_p);
        j["min_p"] = shortest_double(req.sampling.min_p);
        j["repetition_penalty"] = shortest_double(req.sampling.repetition_penalty);
        j["max_new_tokens"] = req.max_new_tokens;
        j["seed"] = req.sampling.seed;
        j["stop"] = job.stop;
        j["ttft_s"] = r.prefill_seconds;
        j["decode_s"] = r.decode_seconds;
        j["decode_tokens_per_s"] = r.decode_tokens_per_second();
        j["device"] = s.backend->name();
        j["provenance"] = provenance();
        out.append(j);
        progress.advance();
      },
      [] { return !interrupted(); });
  if (!finished) {
    progress.clear();
    spdlog::warn("interrupted; {} holds every finished record (continue with --resume)", f.output);
    return int(ExitCode::interrupted);
  }
  progress.finish();
  if (errors) spdlog::warn("{} of {} records could not run; their lines in {} hold \"error\"", errors, jobs.size(), f.output);
  spdlog::info("peak host memory {:.1f} MB", study::peak_host_rss_bytes() / 1e6);
  return 0;
}

}  // namespace

void add_batch_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<BatchFlags>();
  CLI::App* cmd = app.add_subcommand("batch", "generate for every record of a JSONL file, several at once");
  add_model_flags(*cmd, flags->model);
  add_sampling_flags(*cmd, flags->sampling);
  cmd->add_option("--input", flags->input,
                  "JSONL: {\"id\": string or integer, \"prompt\": ... or \"messages\": [{\"role\", \"content\"}...] "
                  "(rendered with the model's chat template), optional temperature, top_k, top_p, min_p, "
                  "repetition_penalty, max_new_tokens, seed, stop} per line (flags give the defaults; other keys "
                  "are refused)");
  cmd->add_option("-o,--output", flags->output, "results JSONL, one line appended per finished record");
  cmd->add_flag("--resume", flags->resume, "skip ids already in --output (a torn last line is cut off first)");
  cmd->add_option("--shard", flags->shard,
                  "I/N: only records whose 0-based index % N == I (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)");
  cmd->add_option("--batch-size", flags->batch_size, "sequences decoded together (KV cache slots)")
      ->capture_default_str();
  cmd->add_flag("--truncate", flags->truncate,
                "keep the last tokens of a prompt longer than the context (else that record gets an error line)");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = batch(*flags);
  });
}

}  // namespace lowbit::cli
