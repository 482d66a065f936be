#include "cli/session.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <utility>

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace lowbit::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted.store(true); }
}  // namespace

void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

bool interrupted() { return g_interrupted.load(); }

void clear_interrupted() { g_interrupted.store(false); }

std::vector<int32_t> Session::stop_ids() const {
  if (!generation.eos_token_ids.empty()) return generation.eos_token_ids;
  if (!model->config().eos_token_ids.empty()) return model->config().eos_token_ids;
  if (tokenizer && tokenizer->eos_id() >= 0) return {tokenizer->eos_id()};
  return {};
}

Session open_session(const ModelFlags& flags, GenerationDefaults generation, int n_slots) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(flags.model_dir))
    throw InputError(fmt::format("{}: model folder not found", flags.model_dir));
  Session s;
  auto t0 = std::chrono::steady_clock::now();
  s.backend = make_backend(flags.device, flags.threads, size_t(flags.memory_cap_mib * 1024.0 * 1024.0),
                           flags.cpu_bf16_activations, flags.cuda_fast_prefill);
  LoadOptions opts = load_options(flags, s.backend->name());
  opts.n_slots = n_slots;
  opts.progress = spdlog::should_log(spdlog::level::info);  // -q: no progress either
  const std::string tok_path = (fs::path(flags.model_dir) / "tokenizer.json").string();
  if (!fs::exists(tok_path)) throw InputError(fmt::format("{}: tokenizer.json is missing", flags.model_dir));
  s.tokenizer.emplace(Tokenizer::from_file(tok_path));
  s.generation = std::move(generation);
  s.model = Model::load(flags.model_dir, *s.backend, opts);
  s.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ModelConfig& c = s.model->config();
  warn_if_context_beyond_model(flags.ctx, c);
  spdlog::info("loaded {} ({} layers, dim {}, {} heads / {} kv) as {} on {} in {:.2f} s; weights {:.2f} MB",
               flags.model_dir, c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads,
               format_name(opts.format), s.backend->name(), s.load_seconds, s.model->weight_bytes() / 1e6);
  return s;
}

}  // namespace lowbit::cli
