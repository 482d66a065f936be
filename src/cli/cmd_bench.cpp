// `lowbit bench`: llama-bench style throughput per weight format. For each format the model is
// loaded (and quantized) once; for each batch size b and prompt length p it measures
//  - prefill: b prompts of p random token ids in one forward (b slots), tokens/s = b*p / time;
//  - time to first token: that prefill plus picking each sequence's first token;
//  - decode: --gen steps of one token per slot (b tokens per forward), tokens/s = b*gen / time;
//  - effective decode bandwidth: the weight bytes one decode step reads / step time, where
//      bytes per step = weight_bytes - embedding table + b embedding rows
//    (every linear, norm and the head are read once per step whatever b is; the embedding is a
//    lookup of b rows; KV-cache reads are left out — at these lengths they are a few percent);
//  - its share of the machine's copy bandwidth, measured in the same run (CPU: memcpy of a
//    1 GiB buffer over all threads, counting read + write bytes as STREAM's Copy does);
//  - decode speed-up against bf16 (or against the first format when bf16 is not listed).
// A warm-up (prefill + two decode steps) precedes the timed repeats of each combination.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/provenance.h"
#include "study/report.h"
#include "core/error.h"
#include "core/parallel.h"
#include "generate/generate.h"
#include "model/model.h"

namespace lowbit::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct BenchFlags {
  ModelFlags model;
  std::string quant_list = "bf16";
  std::string batch_list = "1";
  std::string prompt_list = "128";
  int gen = 64;
  int repeats = 3;
  bool json = false;
};

std::vector<std::string> split_list(const std::string& flag, const std::string& text) {
  std::vector<std::string> items;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) throw UsageError(fmt::format("{} '{}': empty list entry", flag, text));
    items.push_back(item);
  }
  if (items.empty()) throw UsageError(fmt::format("{}: give at least one value", flag));
  return items;
}

std::vector<int> parse_int_list(const std::string& flag, const std::string& text, int min_value, int max_value) {
  std::vector<int> values;
  for (const std::string& item : split_list(flag, text)) {
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < min_value || v > max_value)
      throw UsageError(fmt::format("{} '{}': '{}' is not an integer in [{}, {}]", flag, text, item, min_value, max_value));
    values.push_back(int(v));
  }
  return values;
}

int argmax(const float* x, int n) { return int(std::max_element(x, x + n) - x); }

struct Row {
  std::string format;
  int batch = 0, prompt_len = 0;
  size_t weight_bytes = 0;
  double load_s = 0;
  double prefill_tokens_per_s = 0, ttft_ms = 0;
  double decode_tokens_per_s = 0, decode_tokens_per_s_std = 0;
  double decode_gbs = 0;
  double decode_bw_share = NAN;   // NaN: no bandwidth measurement for this device
  double decode_speedup = NAN;
};

// Prefill b prompts then decode `gen` steps; returns {prefill s, ttft s, decode s}.
struct Timing {
  double prefill_s = 0, ttft_s = 0, decode_s = 0;
};

Timing run_once(Model& model, const std::vector<std::vector<int32_t>>& prompts, int gen) {
  const int b = int(prompts.size()), p = int(prompts[0].size()), vocab = model.config().vocab_size;
  TokenBatch batch;
  std::vector<int> rows;
  for (int s = 0; s < b; ++s) {
    for (int i = 0; i < p; ++i) {
      batch.tokens.push_back(prompts[size_t(s)][size_t(i)]);
      batch.positions.push_back(i);
      batch.slots.push_back(s);
    }
    rows.push_back(s * p + p - 1);
  }
  std::vector<float> logits(size_t(b) * size_t(vocab));
  Timing t;
  auto t0 = Clock::now();
  model.forward(batch, rows, logits.data());  // forward downloads the logits: it has synchronized
  t.prefill_s = seconds_since(t0);
  // Decode as generation runs it (generate/generate.h): greedy, no stop ids, gen steps after the
  // first token; every step one token per slot, picked on the backend (only ids come back),
  // recorded and replayed where the backend can (CUDA graphs).
  std::vector<GenerationRequest> requests(static_cast<size_t>(b));
  std::vector<Sequence> seqs;
  for (int s = 0; s < b; ++s) {
    GenerationRequest& req = requests[size_t(s)];
    req.prompt = prompts[size_t(s)];
    req.sampling.temperature = 0;
    req.max_new_tokens = gen + 1;
    seqs.emplace_back(req, s);
  }
  std::vector<Sequence*> active;
  for (Sequence& s : seqs) {
    take_token(model, s, argmax(logits.data() + size_t(s.slot) * size_t(vocab), vocab));
    active.push_back(&s);
  }
  t.ttft_s = seconds_since(t0);
  t0 = Clock::now();
  for (int g = 0; g < gen; ++g) {
    const std::vector<int32_t> ids = decode_step(model, active);
    for (size_t s = 0; s < active.size(); ++s) take_token(model, *active[s], ids[s]);
  }
  t.decode_s = seconds_since(t0);
  return t;
}

std::string fixed(double v, int digits) { return std::isfinite(v) ? fmt::format("{:.{}f}", v, digits) : "n/a"; }

int run_bench(const BenchFlags& f) {
  std::vector<Format> formats;
  for (const std::string& name : split_list("--quant", f.quant_list)) {
    try {
      formats.push_back(parse_format(name));
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("--quant: {}", e.what()));
    }
  }
  const std::vector<int> batches = parse_int_list("--batch-size", f.batch_list, 1, 4096);
  const std::vector<int> prompt_lens = parse_int_list("-p/--n-prompt", f.prompt_list, 1, 1 << 20);
  if (f.gen < 1) throw UsageError(fmt::format("-n/--n-gen {}: must be >= 1", f.gen));
  if (f.repeats < 1) throw UsageError(fmt::format("-r/--repetitions {}: must be >= 1", f.repeats));
  validate_model_flags(f.model);
  if (!std::filesystem::is_directory(f.model.model_dir))
    throw InputError(fmt::format("{}: model folder not found", f.model.model_dir));
  const ModelConfig cfg = load_config(f.model.model_dir);
  const int max_prompt = *std::max_element(prompt_lens.begin(), prompt_lens.end());
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int context = f.model.ctx > 0 ? f.model.ctx : cfg.max_position_embeddings;
  if (max_prompt + f.gen > context)
    throw UsageError(fmt::format("-p/--n-prompt {} + -n/--n-gen {}: exceed the context of {} tokens", max_prompt,
                                 f.gen, context));
  warn_if_context_beyond_model(f.model.ctx, cfg);

  auto backend = make_backend(f.model.device, f.model.threads, size_t(f.model.memory_cap_mib * 1024.0 * 1024.0),
                              f.model.cpu_bf16_activations, f.model.cuda_fast_prefill);
  const bool on_cpu = backend->name() == "cpu";
  std::string device = device_name(*backend, f.model.threads);
  if (on_cpu && f.model.cpu_bf16_activations) device += ", bf16 activations for bf16 weights";
  if (f.model.cuda_fast_prefill) device += ", fast prefill (bf16 tensor-core GEMMs)";
  // The roofline: copy bandwidth of the memory the weights live in, measured in this run.
  double copy_gbs = NAN;
  try {
    copy_gbs = backend->copy_bandwidth_gbs();
    spdlog::info("{} copy bandwidth {:.1f} GB/s (read + write)", on_cpu ? "host memcpy" : "device-to-device",
                 copy_gbs);
  } catch (const DeviceError& e) {  // e.g. under a --memory-cap smaller than the copy buffers
    spdlog::warn("copy bandwidth not measured ({}); the bandwidth share is n/a", e.what());
  }

  // Random prompts, the same for every format so the rows are comparable.
  std::mt19937_64 rng(0);
  std::uniform_int_distribution<int32_t> token(0, cfg.vocab_size - 1);
  std::vector<std::vector<int32_t>> all_prompts(static_cast<size_t>(max_batch));
  for (auto& prompt : all_prompts)
    for (int i = 0; i < max_prompt; ++i) prompt.push_back(token(rng));

  LoadOptions bench_opts = load_options(f.model, backend->name());
  bench_opts.n_slots = max_batch;
  bench_opts.max_context = max_prompt + f.gen;  // the KV cache holds what the benchmark uses, no more
  bench_opts.progress = !f.json;
  std::vector<Row> rows;
  for (Format format : formats) {
    LoadOptions opts = bench_opts;
    opts.format = format;
    auto t0 = Clock::now();
    std::unique_ptr<Model> model = Model::load(f.model.model_dir, *backend, opts);
    const double load_s = seconds_since(t0);
    spdlog::info("{}: loaded in {:.2f} s, weights {:.2f} MB", format_name(format), load_s, model->weight_bytes() / 1e6);
    // The embedding table is bf16 (f32 under --quant f32) whatever the format.
    const size_t embedding_row_bytes = size_t(cfg.hidden_size) * (format == Format::F32 ? 4 : 2);
    for (int b : batches) {
      for (int p : prompt_lens) {
        std::vector<std::vector<int32_t>> prompts;
        for (int s = 0; s < b; ++s)
          prompts.emplace_back(all_prompts[size_t(s)].begin(), all_prompts[size_t(s)].begin() + p);
        run_once(*model, prompts, 2);  // warm-up: caches, page faults, lazy allocations
        std::vector<Timing> timings;
        for (int r = 0; r < f.repeats; ++r) timings.push_back(run_once(*model, prompts, f.gen));
        Row row;
        row.format = std::string(format_name(format));
        row.batch = b;
        row.prompt_len = p;
        row.weight_bytes = model->weight_bytes();
        row.load_s = load_s;
        std::vector<double> decode_rates;
        double prefill_s = 0, ttft_s = 0, decode_s = 0;
        for (const Timing& t : timings) {
          prefill_s += t.prefill_s / f.repeats;
          ttft_s += t.ttft_s / f.repeats;
          decode_s += t.decode_s / f.repeats;
          decode_rates.push_back(double(b) * f.gen / t.decode_s);
        }
        row.prefill_tokens_per_s = double(b) * p / prefill_s;
        row.ttft_ms = ttft_s * 1e3;
        row.decode_tokens_per_s = double(b) * f.gen / decode_s;
        double var = 0;
        for (double v : decode_rates) var += (v - row.decode_tokens_per_s) * (v - row.decode_tokens_per_s);
        row.decode_tokens_per_s_std = std::sqrt(var / double(decode_rates.size()));
        // A head that is the embedding table is read whole every step (counted once in
        // weight_bytes); otherwise the table is only looked up, b rows.
        const double table_bytes = model->head_shares_embedding() ? 0.0 : double(cfg.vocab_size) * double(embedding_row_bytes);
        const double bytes_per_step = double(row.weight_bytes) - table_bytes + double(b) * double(embedding_row_bytes);
        row.decode_gbs = bytes_per_step / (decode_s / f.gen) / 1e9;
        row.decode_bw_share = row.decode_gbs / copy_gbs;
        rows.push_back(row);
        spdlog::info("{} b={} p={}: prefill {:.1f} tok/s, ttft {:.1f} ms, decode {:.1f} tok/s", row.format, b, p,
                     row.prefill_tokens_per_s, row.ttft_ms, row.decode_tokens_per_s);
      }
    }
  }

  const auto bf16 = std::find(formats.begin(), formats.end(), Format::BF16);
  const std::string baseline(format_name(bf16 != formats.end() ? Format::BF16 : formats[0]));
  for (Row& row : rows)
    for (const Row& base : rows)
      if (base.format == baseline && base.batch == row.batch && base.prompt_len == row.prompt_len)
        row.decode_speedup = row.decode_tokens_per_s / base.decode_tokens_per_s;

  auto number_or_null = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  if (f.json) {
    // Field names as run, batch and sweep write them (quant, batch_size, prompt_tokens, ttft_s).
    nlohmann::ordered_json j;
    j["device"] = backend->name();
    j["device_name"] = device;
    j["model"] = f.model.model_dir;
    j["copy_bandwidth_gbs"] = number_or_null(copy_gbs);
    j["speedup_baseline"] = baseline;
    j["generated_tokens"] = f.gen;
    j["repeats"] = f.repeats;
    j["rows"] = nlohmann::ordered_json::array();
    for (const Row& r : rows) {
      nlohmann::ordered_json row;
      row["quant"] = r.format;
      row["batch_size"] = r.batch;
      row["prompt_tokens"] = r.prompt_len;
      row["weight_bytes"] = r.weight_bytes;
      row["load_s"] = r.load_s;
      row["prefill_tokens_per_s"] = r.prefill_tokens_per_s;
      row["ttft_s"] = r.ttft_ms / 1e3;
      row["decode_tokens_per_s"] = r.decode_tokens_per_s;
      row["decode_tokens_per_s_std"] = r.decode_tokens_per_s_std;
      row["decode_gbs"] = r.decode_gbs;
      row["decode_bw_share"] = number_or_null(r.decode_bw_share);
      row["decode_speedup_vs_bf16"] = number_or_null(r.decode_speedup);
      j["rows"].push_back(row);
    }
    j["provenance"] = provenance_record(model_identity(f.model.model_dir), backend->name(), device);
    std::puts(j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("device: %s; copy bandwidth %s GB/s; %s, gen %d, %d repeats\n\n", device.c_str(),
                fixed(copy_gbs, 1).c_str(), f.model.model_dir.c_str(), f.gen, f.repeats);
    std::printf("| format | batch | prompt | weights | prefill tok/s | TTFT ms | decode tok/s | decode GB/s | "
                "%% of copy BW | decode vs %s |\n",
                baseline.c_str());
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const Row& r : rows)
      std::printf("| %s | %d | %d | %s | %s | %s | %s ± %s | %s | %s | %sx |\n", r.format.c_str(), r.batch,
                  r.prompt_len, study::bytes_label(double(r.weight_bytes)).c_str(),
                  study::significant3(r.prefill_tokens_per_s).c_str(), study::significant3(r.ttft_ms).c_str(),
                  study::significant3(r.decode_tokens_per_s).c_str(),
                  study::significant3(r.decode_tokens_per_s_std).c_str(), study::significant3(r.decode_gbs).c_str(),
                  fixed(100.0 * r.decode_bw_share, 1).c_str(), fixed(r.decode_speedup, 2).c_str());
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "prefill/decode throughput per weight format (llama-bench style)");
  add_model_flags(*cmd, flags->model);
  // --quant takes a list here; the shared single-format option is replaced.
  cmd->remove_option(cmd->get_option("--quant"));
  cmd->add_option("--quant", flags->quant_list, "comma-separated formats, e.g. bf16,int8,nf4")->capture_default_str();
  cmd->add_option("--batch-size,--batch", flags->batch_list,
                  "comma-separated batch sizes (sequences decoded together, as batch --batch-size)")
      ->capture_default_str();
  cmd->add_option("-p,--n-prompt,--prompt-len", flags->prompt_list, "comma-separated prompt lengths (llama-bench -p)")
      ->capture_default_str();
  cmd->add_option("-n,--n-gen,--gen", flags->gen, "decode steps per run (llama-bench -n)")->capture_default_str();
  cmd->add_option("-r,--repetitions,--repeats", flags->repeats, "timed runs per combination (after one warm-up)")
      ->capture_default_str();
  cmd->add_flag("--json", flags->json, "print one JSON document instead of a markdown table");
  cmd->callback([flags, &exit_code] {
    resolve_model_dir(flags->model);
    exit_code = run_bench(*flags);
  });
}

}  // namespace lowbit::cli
