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
#include "cli/session.h"
#include "core/error.h"
#include "core/progress.h"
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
  int batch_size = 4;
};

struct Shard {
  size_t index = 0, count = 1;
};

Shard parse_shard(const std::string& spec) {
  if (spec.empty()) return {};
  size_t slash = spec.find('/');
  auto bad = [&] { return UsageError(fmt::format("--shard '{}': expected I/N with 0 <= I < N", spec)); };
  if (slash == std::string::npos) throw bad();
  Shard s;
  try {
    size_t used_i = 0, used_n = 0;
    std::string i = spec.substr(0, slash), n = spec.substr(slash + 1);
    long long vi = std::stoll(i, &used_i), vn = std::stoll(n, &used_n);
    if (used_i != i.size() || used_n != n.size() || vi < 0 || vn < 1 || vi >= vn) throw bad();
    s.index = size_t(vi);
    s.count = size_t(vn);
  } catch (const std::logic_error&) {  // stoll: not a number, out of range
    throw bad();
  }
  return s;
}

// One input record with its resolved settings.
struct Job {
  json id;
  size_t line = 0;
  std::string prompt;  // the record's prompt, or its messages rendered with the chat template
  GenerationRequest req;
  json messages = nullptr;  // a chat record's messages (no BOS is added: the template writes its own)
};

// Per-record settings override the flags; a bad value is the input file's fault, so it is an
// InputError naming file and line.
void apply_record_settings(const json& rec, const std::string& where, GenerationRequest& req) {
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
    return it->get<long long>();
  };
  if (auto v = number("temperature")) req.sampling.temperature = float(*v);
  if (auto v = integer("top_k")) req.sampling.top_k = int(*v);
  if (auto v = number("top_p")) req.sampling.top_p = float(*v);
  if (auto v = number("min_p")) req.sampling.min_p = float(*v);
  if (auto v = integer("seed")) {
    if (*v < 0) throw InputError(fmt::format("{}: \"seed\" must be >= 0", where));
    req.sampling.seed = uint64_t(*v);
  }
  if (auto v = integer("max_new_tokens")) {
    if (*v < 0 || *v > 1000000000) throw InputError(fmt::format("{}: \"max_new_tokens\" must be >= 0", where));
    req.max_new_tokens = int(*v);
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
  if (f.output.empty()) throw UsageError("--output: the results file is required");
  if (f.batch_size < 1 || f.batch_size > 1024) throw UsageError(fmt::format("--batch-size {}: must be 1 to 1024", f.batch_size));
  const Shard shard = parse_shard(f.shard);
  namespace fs = std::filesystem;
  if (!f.resume && fs::exists(f.output) && fs::file_size(f.output) > 0)
    throw UsageError(fmt::format("--output {}: the file exists (--resume continues it; remove it to start over)",
                                 f.output));
  SamplingParams defaults = sampling_params(f.sampling, load_generation_defaults(f.model.model_dir));

  // Ids already done (--resume). A torn last line is a write cut by a kill: cut it off first.
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
    if (record_index % shard.count != shard.index) continue;
    if (done.count(id->dump())) {
      ++skipped;
      continue;
    }
    Job job{*id, r.line, prompt_text, {}, messages != r.value.end() ? *messages : json(nullptr)};
    job.req.sampling = defaults;
    // Without --seed or a per-record seed, the record's index is its seed, so a rerun or a
    // resumed run reproduces the same text.
    if (!f.sampling.seed) job.req.sampling.seed = record_index;
    job.req.max_new_tokens = f.sampling.max_new_tokens;
    apply_record_settings(r.value, where, job.req);
    jobs.push_back(std::move(job));
  }
  if (f.resume) spdlog::info("resume: {} records already in {}, {} to go", skipped, f.output, jobs.size());
  if (jobs.empty()) {
    spdlog::info("nothing to do");
    return 0;
  }

  Session s = open_session(f.model, f.batch_size);
  const std::vector<int32_t> stop_ids = s.stop_ids();
  std::vector<GenerationRequest> requests;
  for (Job& job : jobs) {
    job.req.prompt = s.tokenizer->encode(job.prompt, job.messages.is_null());
    job.req.stop_ids = stop_ids;
    const std::string where = fmt::format("{}:{}", f.input, job.line);
    if (job.req.prompt.empty()) throw InputError(fmt::format("{}: the prompt encodes to no tokens", where));
    if (int(job.req.prompt.size()) >= s.model->max_context())
      throw InputError(fmt::format("{}: the prompt has {} tokens but the context holds {} (use --ctx)", where,
                                   job.req.prompt.size(), s.model->max_context()));
    requests.push_back(job.req);
  }

  study::JsonlAppender out(f.output, false);
  install_sigint_handler();
  study::treat_sigterm_as_sigint();
  Progress progress("batch", jobs.size(), "records");
  const std::string quant(format_name(s.model->options().format));
  bool finished = study::generate_batched(
      *s.model, requests,
      [&](size_t i, const GenerationResult& r) {
        const Job& job = jobs[i];
        Record j;
        j["id"] = job.id;
        j["prompt"] = job.prompt;
        if (!job.messages.is_null()) j["messages"] = Record::parse(job.messages.dump());
        j["text"] = s.tokenizer->decode(r.tokens, true);
        j["token_ids"] = r.tokens;
        j["prompt_tokens"] = r.prompt_tokens;
        j["generated_tokens"] = r.tokens.size();
        j["stop_reason"] = stop_reason_name(r.stop);
        j["temperature"] = job.req.sampling.temperature;
        j["top_k"] = job.req.sampling.top_k;
        j["top_p"] = job.req.sampling.top_p;
        j["min_p"] = job.req.sampling.min_p;
        j["max_new_tokens"] = job.req.max_new_tokens;
        j["seed"] = job.req.sampling.seed;
        j["quant"] = quant;
        j["device"] = s.backend->name();
        j["ttft_s"] = r.prefill_seconds;
        j["decode_tokens_per_s"] = r.decode_tokens_per_second();
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
                  "JSONL: {\"id\": string or integer, \"prompt\": ... or \"messages\": [{\"role\", \"content\"}...] (rendered "
                  "with the model's chat template), optional temperature, top_k, top_p, min_p, "
                  "max_new_tokens, seed} per line (flags give the defaults)");
  cmd->add_option("--output", flags->output, "results JSONL, one line appended per finished record");
  cmd->add_flag("--resume", flags->resume, "skip ids already in --output (a torn last line is cut off first)");
  cmd->add_option("--shard", flags->shard,
                  "I/N: only records whose 0-based index % N == I (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)");
  cmd->add_option("--batch-size", flags->batch_size, "sequences decoded together (KV cache slots)")
      ->capture_default_str();
  cmd->callback([flags, &exit_code] { exit_code = batch(*flags); });
}

}  // namespace lowbit::cli
