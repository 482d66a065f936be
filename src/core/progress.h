// Progress of long work (loading, sweeps, batches) on stderr: a redrawn bar with rate and ETA
// when stderr is a terminal, and plain log lines (every 5 s or 10 %) when it is a file or pipe,
// so a Slurm log shows progress without being flooded with carriage returns.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace lowbit {

// One line of progress text without terminal control codes, e.g.
// "sweep [#####-----] 50/100 runs  12.5 runs/s  ETA 4s" (bar_width 0: no bar). Pure, for tests.
std::string format_progress(const std::string& label, size_t done, size_t total, const std::string& unit,
                            double elapsed_s, int bar_width);
// "4s", "2m05s", "1h02m": short durations for ETAs.
std::string format_duration(double seconds);

class Progress {
 public:
  // is_terminal: draw a redrawn bar (pass isatty(2)); otherwise log plain lines.
  Progress(std::string label, size_t total, std::string unit, bool is_terminal);
  // Uses isatty(2) to pick the style.
  Progress(std::string label, size_t total, std::string unit);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(size_t n = 1);
  void set_label(std::string label);  // e.g. the format now running
  // Erases the bar so a log line can be printed; the next advance() draws it again.
  void clear();
  // Draws the final state and ends the line (terminal) or logs a last line.
  void finish();

 private:
  void draw(bool force);
  double elapsed() const;

  std::string label_, unit_;
  size_t total_, done_ = 0;
  bool terminal_, finished_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  size_t last_logged_decile_ = 0;
};

}  // namespace lowbit
