// `lowbit sweep`: generation over a grid of formats x prompts x sampling settings, one JSONL record
// per run with speed, memory and quality against bf16 (README "Batch and sweeps", "Study metrics").
//
// One model is resident at a time: bf16 runs first (its runs are the references), then each
// other format generates its runs into <runs>.unscored, is unloaded, and bf16 is loaded again to
// score them (teacher-forced log-probabilities) into the runs file. Greedy grid points that
// cannot differ run once (study::plan_work), their record listing the points it stands for.
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/session.h"
#include "core/error.h"
#include "core/progress.h"
#include "generate/generate.h"
#include "generate/stop_strings.h"
#include "study/grid.h"
#include "study/host.h"
#include "study/jsonl.h"
#include "study/metrics.h"

namespace lowbit::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Record = nlohmann::ordered_json;  // keys stay in the documented order

// max_new_tokens when neither -n nor generation_config.json gives one.
constexpr int kSweepDefaultMaxNewTokens = 128;

struct SweepFlags {
  ModelFlags model;
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::string quant = "bf16,nf4,fp4,fp4-dq,int8,W4A16,W8A8,W8A8-fp8";
  std::string temperature = "0";
  std::string top_k = "50";
  std::string top_p = "1";
  std::string min_p = "0";
  std::string repeat_penalty = "1";
  std::string max_new_tokens;  // "": generation_config.json's max_new_tokens, else 128
  std::string seed = "0";
  int repeats = 1;
  std::string output, shard;
  bool resume = false, force = false, keep_reference = false, logprobs = false;
  std::vector<std::string> stop;
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
  if (fs::path(path).extension() == ".jsonl") {
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
  std::set<std::string> ids;
  for (const Prompt& p : out)
    if (!ids.insert(p.id.dump()).second) throw InputError(fmt::format("{}: prompt id {} appears twice", path, p.id.dump()));
  return out;
}

// Mean log-probability the reference model assigns to `generated` after `prompt`, teacher-forced:
// one forward pass over prompt + generated[:-1], reading the log-softmax at each generated
// position. NaN when nothing was generated.
double reference_mean_logprob(Model& ref, const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated) {
  if (generated.empty()) return NAN;
  std::vector<int32_t> fed = prompt;
  fed.insert(fed.end(), generated.begin(), generated.end() - 1);
  const TokenBatch batch = prefill_batch(fed, 0);
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

// The settings of one grid point as a record writes them. Numbers round-trip exactly through the
// file, so these JSON values are also what --resume compares.
json point_json(const study::SweepSetting& g) {
  return json{{"temperature", g.temperature}, {"top_k", g.top_k},   {"top_p", g.top_p},
              {"min_p", g.min_p},             {"repetition_penalty", g.repetition_penalty},
              {"max_new_tokens", g.max_new_tokens}, {"seed", g.seed}, {"base_seed", g.base_seed},
              {"repeat", g.repeat}};
}

// What identifies a grid point of one prompt (and, with the format, one run): these fields.
constexpr const char* kPointKeyFields[] = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                           "max_new_tokens", "seed", "repeat"};

std::string point_key(const json& prompt_id, const json& point) {
  json key = json::array({prompt_id});
  for (const char* field : kPointKeyFields) key.push_back(point.at(field));
  return key.dump();
}
std::string run_key(const json& prompt_id, std::string_view quant, const json& point) {
  return std::string(quant) + " " + point_key(prompt_id, point);
}

// The grid points a record stands for: its "stands_for" list (greedy runs) completed with the
// record's own max_new_tokens and repetition penalty, or the record's own settings. Files from
// before min_p and repetition_penalty were axes lack them: their defaults, 0 and 1.
std::vector<json> record_points(const json& r) {
  json base = r;
  if (!base.contains("min_p")) base["min_p"] = 0.0;
  if (!base.contains("repetition_penalty")) base["repetition_penalty"] = 1.0;
  auto it = r.find("stands_for");
  if (it == r.end() || !it->is_array()) return {base};
  std::vector<json> points;
  for (const json& p : *it) {
    json point = base;
    for (const auto& [k, v] : p.items()) point[k] = v;
    points.push_back(std::move(point));
  }
  return points;
}

// Checks that a record read back from the runs file (or its .unscored companion) is a sweep run of
// this model; throws InputError naming file:line.
void check_sweep_record(const json& r, const std::string& where, const ModelIdentity& model) {
  for (const char* key : {"model", "prompt_id", "quant", "text", "token_ids"})
    if (!r.contains(key)) throw InputError(fmt::format("{}: not a sweep run (no \"{}\")", where, key));
  for (const json& point : record_points(r))
    for (const char* key : kPointKeyFields)
      if (!point.contains(key)) throw InputError(fmt::format("{}: not a sweep run (no \"{}\")", where, key));
  const json& ids = r["token_ids"];
  if (!r["text"].is_string() || !ids.is_array() || !std::all_of(ids.begin(), ids.end(), [](const json& t) {
        return t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() <= INT32_MAX;
      }))
    throw InputError(fmt::format("{}: \"text\" must be a string and \"token_ids\" a list of token ids", where));
  if (r["model"] != model.dir)
    throw InputError(fmt::format("{}: a run of model {}, not {} (resume with the same -m, or start a new file)", where,
                                 r["model"].dump(), model.dir));
  const json hash = r.contains("provenance") ? r["provenance"].value("model_config_sha256", json()) : json();
  if (hash.is_string() && hash != model.config_sha256)
    throw InputError(fmt::format("{}: a run of a model whose config.json had SHA-256 {}, not {} (the folder changed; "
                                 "start a new file)",
                                 where, hash.get<std::string>(), model.config_sha256));
}

// The runs already in a runs file (--resume), by run_key, each mapped to its record. A torn last
// line (a write cut by a kill) is cut off first. Runs of another model are refused.
std::map<std::string, json> finished_runs(const std::string& path, const ModelIdentity& model) {
  std::map<std::string, json> done;
  if (!fs::exists(path)) return done;
  if (size_t cut = study::truncate_torn_tail(path))
    spdlog::warn("{}: removed a torn last line ({} bytes) left by an interrupted run", path, cut);
  for (study::JsonlRecord& r : study::read_jsonl(path, false)) {
    const std::string where = fmt::format("{}:{}", path, r.line);
    check_sweep_record(r.value, where, model);
    for (const json& point : record_points(r.value))
      done[run_key(r.value["prompt_id"], r.value["quant"].get<std::string>(), point)] = r.value;
  }
  return done;
}

// One computed run and the grid points it answers for.
struct RunOutcome {
  std::vector<size_t> points;   // indices into the grid; the first is the record's own settings
  bool greedy = false;
  GenerationResult result;
  std::string text;
  bool host_logits = false;     // sampled on the host (--logprobs, the greedy tie check)
};

class Sweep {
 public:
  explicit Sweep(const SweepFlags& f) : f_(f) {}
  int run();

 private:
  void parse();
  void plan();
  // The bf16 reference, loaded (after resetting the peak-RSS mark) when not resident.
  Session& reference();
  void drop_reference();
  // Generates the pending runs of format index fi on session s; false when interrupted.
  bool generate_format(size_t fi, Session& s, bool score_now, study::JsonlAppender& sink);
  // Scores every run in the .unscored file with the bf16 model into the runs file, then empties
  // it. `counted`: each scored run advances the progress (runs left by an earlier sweep).
  bool score_unscored(bool counted);
  std::vector<RunOutcome> run_item(Session& s, const Prompt& p, const study::WorkItem& item);
  Record make_record(const Prompt& p, Format format, Session& s, const RunOutcome& o,
                     const std::vector<size_t>& members, const ReferenceRun& ref);
  ReferenceRun& reference_of(const Prompt& p, size_t point);

  const SweepFlags& f_;
  GenerationDefaults generation_;  // generation_config.json, read once
  std::vector<Format> formats_;
  bool implicit_reference_ = false;
  std::vector<study::SweepSetting> grid_;
  std::vector<Prompt> prompts_;
  Shard shard_;
  ModelIdentity identity_;
  std::string unscored_path_;
  std::map<std::string, json> done_;
  std::set<std::string> unscored_keys_;
  size_t unscored_count_ = 0;
  std::vector<std::vector<std::vector<study::WorkItem>>> work_;  // [format][prompt] -> items
  std::map<std::string, ReferenceRun> references_;                // point_key -> bf16 run
  std::optional<Session> ref_;
  std::optional<study::JsonlAppender> out_;
  std::optional<Progress> progress_;
  bool rss_resettable_ = true;
  std::map<std::string, std::string> device_names_;  // backend name -> device in words (read once)
};

void Sweep::parse() {
  validate_model_flags(f_.model);
  if (f_.output.empty()) throw UsageError("-o/--output: the runs file is required");
  if (f_.prompts.empty() == f_.prompts_file.empty())
    throw UsageError("give prompts with -p (repeatable) or --prompts FILE, exactly one of them");
  if (f_.resume && f_.force) throw UsageError("--resume continues the runs file and --force starts it over: pick one");
  for (const std::string& name : study::parse_name_list("--quant", f_.quant)) {
    Format format;
    try {
      format = parse_format(name);
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("--quant: {}", e.what()));
    }
    if (std::find(formats_.begin(), formats_.end(), format) != formats_.end())
      throw UsageError(fmt::format("--quant '{}': {} appears twice", f_.quant, format_name(format)));
    formats_.push_back(format);
  }
  // Quality is always measured against bf16, so bf16 runs first; when not asked for, its runs are
  // still written, marked "implicit_reference": true.
  implicit_reference_ = std::find(formats_.begin(), formats_.end(), Format::BF16) == formats_.end();
  formats_.erase(std::remove(formats_.begin(), formats_.end(), Format::BF16), formats_.end());
  formats_.insert(formats_.begin(), Format::BF16);

  generation_ = load_generation_defaults(f_.model.model_dir);
  const std::string max_new =
      !f_.max_new_tokens.empty() ? f_.max_new_tokens
                                 : std::to_string(generation_.max_new_tokens > 0 ? generation_.max_new_tokens
                                                                                 : kSweepDefaultMaxNewTokens);
  study::SweepAxes axes;
  axes.temperature = study::parse_float_list("--temperature", f_.temperature);
  axes.top_k = study::parse_int_list("--top-k", f_.top_k);
  axes.top_p = study::parse_float_list("--top-p", f_.top_p);
  axes.min_p = study::parse_float_list("--min-p", f_.min_p);
  axes.repetition_penalty = study::parse_float_list("--repeat-penalty", f_.repeat_penalty);
  axes.max_new_tokens = study::parse_int_list("--max-new-tokens", max_new);
  axes.seed = study::parse_int_list("--seed", f_.seed);
  axes.repeats = f_.repeats;
  study::validate_axes(axes);
  grid_ = study::expand_grid(axes);
  shard_ = parse_shard(f_.shard);
  validate_stop_strings(f_.stop);

  if (!f_.resume && !f_.force && fs::exists(f_.output) && fs::file_size(f_.output) > 0)
    throw UsageError(fmt::format("-o/--output {}: the runs file exists (--resume continues it, --force starts it over)",
                                 f_.output));
  if (!fs::is_directory(f_.model.model_dir))
    throw InputError(fmt::format("{}: model folder not found", f_.model.model_dir));
  prompts_.clear();
  if (!f_.prompts_file.empty()) {
    prompts_ = read_prompt_file(f_.prompts_file, f_.model.model_dir);
  } else {
    for (const std::string& p : f_.prompts) prompts_.push_back({json(prompts_.size()), p, {}});
  }
  // Prompts are tokenized and checked against the context before any model loads.
  const Tokenizer tok = Tokenizer::from_file((fs::path(f_.model.model_dir) / "tokenizer.json").string());
  const ModelConfig cfg = load_config(f_.model.model_dir);
  const int context = f_.model.ctx > 0 ? f_.model.ctx : cfg.max_position_embeddings;
  for (Prompt& p : prompts_) {
    p.tokens = tok.encode(p.text, p.messages.is_null());
    if (const std::string problem = prompt_problem(p.tokens.size(), context); !problem.empty())
      throw InputError(fmt::format("prompt {}: {}", p.id.dump(), problem));
  }
  identity_ = model_identity(f_.model.model_dir);
  unscored_path_ = f_.output + ".unscored";
}

void Sweep::plan() {
  if (f_.resume) {
    done_ = finished_runs(f_.output, identity_);
    if (fs::exists(unscored_path_)) {
      if (size_t cut = study::truncate_torn_tail(unscored_path_))
        spdlog::warn("{}: removed a torn last line ({} bytes)", unscored_path_, cut);
      for (const study::JsonlRecord& r : study::read_jsonl(unscored_path_, false)) {
        check_sweep_record(r.value, fmt::format("{}:{}", unscored_path_, r.line), identity_);
        bool scored = true;
        for (const json& point : record_points(r.value)) {
          const std::string key = run_key(r.value["prompt_id"], r.value["quant"].get<std::string>(), point);
          scored = scored && done_.count(key);
          unscored_keys_.insert(key);
        }
        unscored_count_ += !scored;
      }
    }
  } else if (fs::exists(unscored_path_)) {
    fs::remove(unscored_path_);  // a fresh (or --force) sweep: an earlier sweep's leftovers go
  }
  // bf16 references already in the file.
  for (const auto& [key, r] : done_)
    if (r["quant"] == "bf16")
      for (const json& point : record_points(r))
        references_[point_key(r["prompt_id"], point)] = {r["token_ids"].get<std::vector<int32_t>>(),
                                                         r["text"].get<std::string>()};
  // Shards split the work items of the whole grid (the same for every format and every rerun),
  // so a greedy class never straddles two shards.
  const std::vector<study::WorkItem> full = study::plan_work(grid_, {});
  std::vector<std::vector<bool>> in_shard(prompts_.size(), std::vector<bool>(grid_.size(), false));
  for (size_t pi = 0; pi < prompts_.size(); ++pi)
    for (size_t k = 0; k < full.size(); ++k)
      if (shard_.takes(pi * full.size() + k))
        for (size_t point : full[k].points) in_shard[pi][point] = true;
  work_.assign(formats_.size(), std::vector<std::vector<study::WorkItem>>(prompts_.size()));
  for (size_t fi = 0; fi < formats_.size(); ++fi)
    for (size_t pi = 0; pi < prompts_.size(); ++pi) {
      std::vector<bool> take(grid_.size());
      for (size_t i = 0; i < grid_.size(); ++i) {
        const std::string key = run_key(prompts_[pi].id, format_name(formats_[fi]), point_json(grid_[i]));
        take[i] = in_shard[pi][i] && !done_.count(key) && !unscored_keys_.count(key);
      }
      work_[fi][pi] = study::plan_work(grid_, take);
    }
}

Session& Sweep::reference() {
  if (!ref_) {
    ModelFlags flags = f_.model;
    flags.quant = "bf16";
    if (progress_) progress_->clear();
    rss_resettable_ = study::reset_peak_rss();
    ref_.emplace(open_session(flags, generation_));
  }
  return *ref_;
}

void Sweep::drop_reference() {
  if (!f_.keep_reference) ref_.reset();
}

ReferenceRun& Sweep::reference_of(const Prompt& p, size_t point) {
  auto it = references_.find(point_key(p.id, point_json(grid_[point])));
  if (it == references_.end())
    throw InputError(fmt::format("internal: no bf16 run for prompt {} at {}", p.id.dump(), point_json(grid_[point]).dump()));
  return it->second;
}

// Runs one work item. A greedy class runs once at temperature 0; when it holds top-k 1 points at
// temperatures > 0, each step checks with the sampler itself that top-k 1 keeps a single token
// at every such temperature (it keeps all tokens tied for the top). If a tie ever shows up, those
// points are run one by one, as sampled points.
std::vector<RunOutcome> Sweep::run_item(Session& s, const Prompt& p, const study::WorkItem& item) {
  const study::SweepSetting& rep = grid_[item.points.front()];
  GenerationRequest req;
  req.prompt = p.tokens;
  req.max_new_tokens = rep.max_new_tokens;
  req.stop_ids = s.stop_ids();
  req.logprobs = f_.logprobs;
  req.sampling.temperature = item.greedy ? 0.0f : float(rep.temperature);
  req.sampling.top_k = item.greedy ? 0 : rep.top_k;
  req.sampling.top_p = item.greedy ? 1.0f : float(rep.top_p);
  req.sampling.min_p = item.greedy ? 0.0f : float(rep.min_p);
  req.sampling.repetition_penalty = float(rep.repetition_penalty);
  req.sampling.seed = rep.seed;
  std::vector<size_t> at_zero, top_k_one;
  for (size_t i : item.points) (grid_[i].temperature == 0 ? at_zero : top_k_one).push_back(i);
  bool tie = false;
  if (item.greedy && !top_k_one.empty()) {
    std::vector<SamplingParams> checks;
    std::set<double> temperatures;
    for (size_t i : top_k_one)
      if (temperatures.insert(grid_[i].temperature).second) {
        SamplingParams c = req.sampling;
        c.temperature = float(grid_[i].temperature);
        c.top_k = 1;
        checks.push_back(c);
      }
    req.inspect_logits = [checks, &tie](std::span<const float> logits, std::span<const int32_t> history) {
      for (const SamplingParams& c : checks) {
        if (tie) return;
        const std::vector<double> d = sampling_distribution(logits, c, history);
        tie = std::count_if(d.begin(), d.end(), [](double x) { return x > 0; }) > 1;
      }
    };
  }
  req.stop_after = stop_after_strings(*s.tokenizer, req.prompt, f_.stop);
  std::vector<RunOutcome> out;
  RunOutcome o;
  o.greedy = item.greedy;
  o.host_logits = needs_host_logits(req);
  o.result = generate(*s.model, req, [](int32_t) { return !interrupted(); });
  o.text = s.tokenizer->decode(o.result.tokens, true);
  if (o.result.stop == StopReason::stop_string) o.text = cut_at_stop(o.text, f_.stop);
  o.points = item.points;
  if (!tie) {
    out.push_back(std::move(o));
    return out;
  }
  spdlog::info("prompt {}: two logits tie for the top; its {} top-k 1 points run one by one", p.id.dump(),
               top_k_one.size());
  if (!at_zero.empty()) {
    o.points = at_zero;
    out.push_back(std::move(o));
  }
  for (size_t i : top_k_one) {
    if (interrupted()) break;
    std::vector<RunOutcome> single = run_item(s, p, study::WorkItem{{i}, false});
    out.insert(out.end(), single.begin(), single.end());
  }
  return out;
}

Record Sweep::make_record(const Prompt& p, Format format, Session& s, const RunOutcome& o,
                          const std::vector<size_t>& members, const ReferenceRun& ref) {
  const study::SweepSetting& g = grid_[members.front()];
  const GenerationResult& r = o.result;
  const study::TokenAgreement agree = study::token_agreement(r.tokens, ref.tokens);
  Record j;
  j["model"] = f_.model.model_dir;
  j["prompt_id"] = p.id;
  j["prompt"] = p.text;
  if (!p.messages.is_null()) j["messages"] = Record::parse(p.messages.dump());
  j["quant"] = format_name(format);
  j["implicit_reference"] = format == Format::BF16 && implicit_reference_;
  const json point = point_json(g);
  for (const char* key : {"temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens", "seed",
                          "base_seed", "repeat"})
    j[key] = point[key];
  j["greedy"] = o.greedy;
  if (o.greedy) {
    Record stands = Record::array();
    for (size_t i : members) {
      const json m = point_json(grid_[i]);
      stands.push_back({{"temperature", m["temperature"]}, {"top_k", m["top_k"]}, {"top_p", m["top_p"]},
                        {"min_p", m["min_p"]}, {"seed", m["seed"]}, {"base_seed", m["base_seed"]},
                        {"repeat", m["repeat"]}});
    }
    j["stands_for"] = stands;
  }
  j["stop"] = f_.stop;
  j["text"] = o.text;
  j["token_ids"] = r.tokens;
  if (f_.logprobs) j["logprobs"] = r.logprobs;
  j["prompt_tokens"] = r.prompt_tokens;
  j["generated_tokens"] = r.tokens.size();
  j["ttft_s"] = r.prefill_seconds;
  j["decode_tokens_per_s"] = r.decode_tokens_per_second();
  j["sampled_on_host"] = o.host_logits;
  j["peak_memory_bytes"] = s.backend->peak_memory_bytes();
  j["peak_host_rss_bytes"] = rss_resettable_ ? Record(study::peak_rss_since_reset_bytes()) : Record(nullptr);
  j["weight_bytes"] = s.model->weight_bytes();
  j["load_s"] = s.load_seconds;
  j["stop_reason"] = stop_reason_name(r.stop);
  j["device"] = s.backend->name();
  j["token_agreement"] = agree.fraction;
  j["first_divergence"] = agree.first_divergence < 0 ? Record(nullptr) : Record(agree.first_divergence);
  j["rouge_l_f1"] = study::rouge_l_f1(ref.text, o.text);
  j["distinct_1"] = study::distinct_n(r.tokens, 1);
  j["distinct_2"] = study::distinct_n(r.tokens, 2);
  j["ref_mean_logprob"] = nullptr;  // filled by the bf16 model (now for bf16, in the scoring pass otherwise)
  auto named = device_names_.find(s.backend->name());
  if (named == device_names_.end())
    named = device_names_.emplace(s.backend->name(), device_name(*s.backend, f_.model.threads)).first;
  j["provenance"] = provenance_record(identity_, s.backend->name(), named->second);
  return j;
}

bool Sweep::generate_format(size_t fi, Session& s, bool score_now, study::JsonlAppender& sink) {
  const Format format = formats_[fi];
  progress_->set_label(fmt::format("sweep {}", format_name(format)));
  for (size_t pi = 0; pi < prompts_.size(); ++pi) {
    const Prompt& p = prompts_[pi];
    for (const study::WorkItem& item : work_[fi][pi]) {
      std::vector<RunOutcome> outcomes = run_item(s, p, item);
      if (interrupted()) return false;
      for (const RunOutcome& o : outcomes) {
        if (format == Format::BF16)
          for (size_t i : o.points) references_[point_key(p.id, point_json(grid_[i]))] = {o.result.tokens, o.text};
        // Points whose bf16 references differ (a bf16 tie split its class) get a record each group.
        std::map<std::vector<int32_t>, std::vector<size_t>> by_reference;
        std::vector<std::vector<int32_t>> order;
        for (size_t i : o.points) {
          const std::vector<int32_t>& ref_tokens = reference_of(p, i).tokens;
          if (!by_reference.count(ref_tokens)) order.push_back(ref_tokens);
          by_reference[ref_tokens].push_back(i);
        }
        double logprob = NAN;
        if (score_now) logprob = reference_mean_logprob(*reference().model, p.tokens, o.result.tokens);
        for (const auto& tokens : order) {
          const std::vector<size_t>& members = by_reference[tokens];
          Record j = make_record(p, format, s, o, members, reference_of(p, members.front()));
          if (score_now) j["ref_mean_logprob"] = nullable(logprob);
          sink.append(j);
        }
      }
      progress_->advance();
    }
  }
  return true;
}

bool Sweep::score_unscored(bool counted) {
  if (!fs::exists(unscored_path_) || fs::file_size(unscored_path_) == 0) return true;
  Model& ref = *reference().model;
  progress_->set_label("sweep scoring");
  std::map<std::string, const Prompt*> by_id;
  for (const Prompt& p : prompts_) by_id[p.id.dump()] = &p;
  const Tokenizer& tok = *reference().tokenizer;
  for (study::OrderedJsonlRecord& r : study::read_jsonl_ordered(unscored_path_)) {
    if (interrupted()) return false;
    bool scored = true;  // already in the runs file (a scoring pass that was interrupted)
    for (const json& point : record_points(json(r.value)))
      scored = scored && done_.count(run_key(json(r.value["prompt_id"]), r.value["quant"].get<std::string>(), point));
    if (scored) continue;
    auto p = by_id.find(json(r.value["prompt_id"]).dump());
    const std::vector<int32_t> prompt =
        p != by_id.end() ? p->second->tokens
                         : tok.encode(r.value["prompt"].get<std::string>(), !r.value.contains("messages"));
    r.value["ref_mean_logprob"] =
        nullable(reference_mean_logprob(ref, prompt, r.value["token_ids"].get<std::vector<int32_t>>()));
    out_->append(r.value);
    for (const json& point : record_points(json(r.value)))
      done_[run_key(json(r.value["prompt_id"]), r.value["quant"].get<std::string>(), point)] = json(r.value);
    if (counted) progress_->advance();
  }
  fs::resize_file(unscored_path_, 0);
  return true;
}

int Sweep::run() {
  parse();
  plan();
  std::vector<size_t> pending(formats_.size(), 0);
  size_t points = 0, shard_points = 0;
  for (size_t fi = 0; fi < formats_.size(); ++fi)
    for (size_t pi = 0; pi < prompts_.size(); ++pi) pending[fi] += work_[fi][pi].size();
  points = formats_.size() * prompts_.size() * grid_.size();
  for (size_t pi = 0; pi < prompts_.size(); ++pi) {
    const std::vector<study::WorkItem> full = study::plan_work(grid_, {});
    for (size_t k = 0; k < full.size(); ++k)
      if (shard_.takes(pi * full.size() + k)) shard_points += full[k].points.size();
  }
  const size_t total_pending = std::accumulate(pending.begin(), pending.end(), size_t(0));
  spdlog::info("sweep: {} formats x {} prompts x {} settings = {} grid points{}; {} runs to compute -> {}",
               formats_.size(), prompts_.size(), grid_.size(), points,
               shard_.count > 1 ? fmt::format(" ({} in shard {}/{})", shard_points * formats_.size(), shard_.index,
                                              shard_.count)
                                : std::string(),
               total_pending, f_.output);
  if (f_.resume)
    spdlog::info("resume: {} grid points already in {}, {} to go", done_.size(), f_.output, total_pending);
  // The runs file is opened (created) before any model loads, so an unwritable path costs nothing.
  out_.emplace(f_.output, !f_.resume);
  if (total_pending == 0 && unscored_count_ == 0) return 0;
  install_sigint_handler();
  study::treat_sigterm_as_sigint();
  progress_.emplace("sweep", total_pending + unscored_count_, "runs");
  auto stop = [&] {
    progress_->clear();
    spdlog::warn("interrupted; {} holds every finished run (continue with --resume)", f_.output);
    return int(ExitCode::interrupted);
  };
  // Runs an earlier, interrupted sweep generated but did not score.
  if (unscored_count_ > 0 && !score_unscored(true)) return stop();
  for (size_t fi = 0; fi < formats_.size(); ++fi) {
    if (pending[fi] == 0) continue;
    if (formats_[fi] == Format::BF16) {
      if (!generate_format(fi, reference(), true, *out_)) return stop();
      continue;
    }
    drop_reference();
    const bool score_now = ref_.has_value();  // --keep-reference: bf16 stays resident and scores at once
    {
      ModelFlags flags = f_.model;
      flags.quant = std::string(format_name(formats_[fi]));
      progress_->clear();
      rss_resettable_ = study::reset_peak_rss();
      Session s = open_session(flags, generation_);
      if (score_now) {
        if (!generate_format(fi, s, true, *out_)) return stop();
        continue;
      }
      study::JsonlAppender unscored(unscored_path_, false);
      if (!generate_format(fi, s, false, unscored)) return stop();
    }  // the format is unloaded here, before bf16 comes back to score its runs
    if (!score_unscored(false)) return stop();
  }
  progress_->finish();
  if (fs::exists(unscored_path_) && fs::file_size(unscored_path_) == 0) fs::remove(unscored_path_);
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
                  "prompt file: .jsonl with {\"id\", \"prompt\"} per line, else one prompt per line");
  const char* list_help = "comma-separated values and/or start:stop:step ranges (stop included)";
  cmd->add_option("--temperature,--temp", flags->temperature, fmt::format("temperatures: {}", list_help))
      ->capture_default_str();
  cmd->add_option("--top-k", flags->top_k, fmt::format("top-k values (0 = off): {}", list_help))
      ->capture_default_str();
  cmd->add_option("--top-p", flags->top_p, fmt::format("top-p values: {}", list_help))->capture_default_str();
  cmd->add_option("--min-p", flags->min_p, fmt::format("min-p values (0 = off): {}", list_help))->capture_default_str();
  cmd->add_option("--repeat-penalty", flags->repeat_penalty, fmt::format("repetition penalties (1 = off): {}", list_help))
      ->capture_default_str();
  cmd->add_option("-n,--max-new-tokens", flags->max_new_tokens,
                  fmt::format("generation lengths: {} (default: generation_config.json's max_new_tokens, else {})",
                              list_help, kSweepDefaultMaxNewTokens));
  cmd->add_option("--seed", flags->seed, fmt::format("base seeds: {}", list_help))->capture_default_str();
  cmd->add_option("--repeats", flags->repeats, "runs per setting; repeat r uses seed + r")->capture_default_str();
  add_stop_flag(*cmd, flags->stop);
  add_logprobs_flag(*cmd, flags->logprobs);
  cmd->add_option("-o,--output", flags->output,
                  "runs file (JSONL, one line per finished run); an existing one needs --resume or --force");
  cmd->add_flag("--resume", flags->resume,
                "continue the runs file: runs already in it (same prompt id, format and settings) are skipped");
  cmd->add_flag("--force", flags->force, "start an existing runs file over (its runs are deleted)");
  cmd->add_option("--shard", flags->shard,
                  "I/N: only the work items whose 0-based index % N == I (one runs file per shard; `lowbit report` "
                  "merges them)");
  cmd->add_flag("--keep-reference", flags->keep_reference,
                "keep the bf16 reference loaded next to each format (faster; needs memory for both)");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = Sweep(*flags).run();
  });
}

}  // namespace lowbit::cli
