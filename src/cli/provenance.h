// Where a number came from, written into every JSON record and onto the report page: the lowbit
// build (version, git commit), the device, the command line, the date, and which model folder
// (the SHA-256 of its config.json, the bytes of its weight files).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"

namespace lowbit::cli {

struct ModelIdentity {
  std::string dir;
  std::string config_sha256;      // of config.json's bytes: `sha256sum config.json`
  uint64_t weight_file_bytes = 0; // total size of the *.safetensors files
};
// Reads config.json (and stats the weight files); nothing is loaded.
ModelIdentity model_identity(const std::string& dir);

// This process's command line from /proc/self/cmdline, each argument shell-quoted when needed.
std::string command_line();
// Now, UTC, ISO 8601 to the second ("2026-11-24T10:03:17Z").
std::string utc_timestamp();
// The processor's name from /proc/cpuinfo ("AMD EPYC 7B13"), "unknown CPU" without one.
std::string cpu_model_name();
// The device in words: "cpu: <model>, N threads" or the CUDA backend's description.
std::string device_name(const Backend& backend, int threads_flag);

// {"lowbit_version", "lowbit_commit", "command", "date", "device", "device_name", "model",
//  "model_config_sha256", "model_weight_file_bytes"}. `date` is taken now.
nlohmann::ordered_json provenance_record(const ModelIdentity& model, const std::string& device,
                                         const std::string& device_name);

}  // namespace lowbit::cli
