#include "study/jsonl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit::study {

std::string json_line(const nlohmann::ordered_json& record) {
  return record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

JsonlAppender::JsonlAppender(std::string path, bool truncate) : path_(std::move(path)) {
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
  fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) throw InputError(fmt::format("{}: cannot open for writing: {}", path_, std::strerror(errno)));
}

JsonlAppender::~JsonlAppender() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlAppender::append(const nlohmann::ordered_json& record) {
  const std::string line = json_line(record);
  size_t written = 0;
  while (written < line.size()) {
    ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;  // a signal (SIGINT for a clean stop) must not tear the line
      throw InputError(fmt::format("{}: write failed: {}", path_, std::strerror(errno)));
    }
    written += size_t(n);
  }
  if (::fsync(fd_) != 0 && errno != EINVAL)  // EINVAL: a pipe or /dev/stdout, nothing to sync
    throw InputError(fmt::format("{}: fsync failed: {}", path_, std::strerror(errno)));
}

std::vector<JsonlRecord> read_jsonl(const std::string& path, bool allow_torn_tail, size_t* torn_line) {
  if (torn_line) *torn_line = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::vector<JsonlRecord> out;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool has_newline = end != std::string::npos;
    if (!has_newline) end = text.size();
    ++line_no;
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    try {
      out.push_back({line_no, nlohmann::json::parse(line)});
    } catch (const nlohmann::json::exception& e) {
      if (!has_newline && allow_torn_tail) {
        if (torn_line) *torn_line = line_no;
        break;
      }
      throw InputError(fmt::format("{}:{}: malformed JSON line: {}", path, line_no, e.what()));
    }
    if (!out.back().value.is_object())
      throw InputError(fmt::format("{}:{}: expected a JSON object", path, line_no));
  }
  return out;
}

std::vector<OrderedJsonlRecord> read_jsonl_ordered(const std::string& path) {
  std::vector<OrderedJsonlRecord> out;
  for (const JsonlRecord& r : read_jsonl(path, false)) (void)r;  // validates every line (named errors)
  std::ifstream in(path, std::ios::binary);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back({line_no, nlohmann::ordered_json::parse(line)});
  }
  return out;
}

size_t truncate_torn_tail(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) return 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (text.empty() || text.back() == '\n') return 0;
  size_t keep = text.rfind('\n');
  keep = keep == std::string::npos ? 0 : keep + 1;
  std::error_code ec;
  fs::resize_file(path, keep, ec);
  if (ec) throw InputError(fmt::format("{}: cannot cut the torn last line: {}", path, ec.message()));
  return text.size() - keep;
}

}  // namespace lowbit::study
