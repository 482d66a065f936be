// JSON Lines files that survive a kill: every record is one write() of a whole line followed by
// fsync, so a crash leaves at most one torn last line, which readers drop (and --resume cuts off).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit::study {

// One record as a single line (keys in insertion order) ending in '\n' (invalid UTF-8 replaced, never an exception).
std::string json_line(const nlohmann::ordered_json& record);

class JsonlAppender {
 public:
  // truncate: start an empty file; otherwise append to what is there. Throws InputError naming path.
  JsonlAppender(std::string path, bool truncate);
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;

  // Writes the whole line with one write() (looping only on a short write) and fsyncs.
  void append(const nlohmann::ordered_json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

struct JsonlRecord {
  size_t line = 0;  // 1-based line number in the file
  nlohmann::json value;
};

// Parses every non-blank line. A malformed line is an InputError "path:line: ...". With
// allow_torn_tail, a last line without its '\n' that does not parse is dropped (a write cut by a
// kill) instead, and its line number is stored in *torn_line when given (0: none was dropped).
std::vector<JsonlRecord> read_jsonl(const std::string& path, bool allow_torn_tail, size_t* torn_line = nullptr);

// As read_jsonl, keeping each object's keys in file order (for records rewritten and passed on).
struct OrderedJsonlRecord {
  size_t line = 0;
  nlohmann::ordered_json value;
};
std::vector<OrderedJsonlRecord> read_jsonl_ordered(const std::string& path);

// For --resume: if the file's last line has no '\n', cuts it off (the torn write of a killed run)
// and returns how many bytes were removed; 0 when the file is whole or absent.
size_t truncate_torn_tail(const std::string& path);

}  // namespace lowbit::study
