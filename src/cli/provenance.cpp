#include "cli/provenance.h"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "cli/options.h"
#include "core/cpu_features.h"
#include "core/sha256.h"
#include "core/version.h"

namespace lowbit::cli {

namespace fs = std::filesystem;

ModelIdentity model_identity(const std::string& dir) {
  ModelIdentity id;
  id.dir = dir;
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::is_regular_file(config)) id.config_sha256 = sha256_hex(read_text_file(config.string()));
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".safetensors" && entry.is_regular_file(ec))
      id.weight_file_bytes += entry.file_size(ec);
  return id;
}

namespace {
std::string shell_word(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                          std::string::npos)
    return arg;
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string raw = ss.str();
  std::string out;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    out += (out.empty() ? "" : " ") + shell_word(raw.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos && line.find_first_not_of(' ', colon + 1) != std::string::npos)
        return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown CPU";
}

std::string device_name(const Backend& backend, int threads_flag) {
  if (backend.name() != "cpu") return backend.description();
  const int threads = threads_flag > 0 ? threads_flag : int(std::max(1u, std::thread::hardware_concurrency()));
  return fmt::format("cpu: {}, {} threads, {}", cpu_model_name(), threads, cpu_kernel_summary());
}

nlohmann::ordered_json provenance_record(const ModelIdentity& model, const std::string& device,
                                         const std::string& device_name) {
  nlohmann::ordered_json p;
  p["lowbit_version"] = lowbit_version();
  p["lowbit_commit"] = lowbit_commit();
  p["command"] = command_line();
  p["date"] = utc_timestamp();
  p["device"] = device;
  p["device_name"] = device_name;
  p["model"] = model.dir;
  p["model_config_sha256"] = model.config_sha256;
  p["model_weight_file_bytes"] = model.weight_file_bytes;
  return p;
}

}  // namespace lowbit::cli
